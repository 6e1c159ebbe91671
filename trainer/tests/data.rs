//! Data sets on real Fashion-MNIST (Debian's dataset-fashion-mnist, installed by set-up).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;
use scion_trainer::dataset::Dataset;
use scion_trainer::idx::{self, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR};
use scion_trainer::lint::{LintOptions, Severity, lint};

fn fmnist(file: &str) -> PathBuf {
    let p = Path::new(FASHION_MNIST_DIR).join(file);
    assert!(
        p.exists(),
        "{} missing; run scripts/setup.sh first",
        p.display()
    );
    p
}

fn scion() -> Command {
    Command::cargo_bin("scion").expect("binary built")
}

/// Import `per_class` training images of each class into `out`.
fn import(out: &Path, per_class: usize) {
    scion()
        .args([
            "data",
            "import-idx",
            "--preset",
            "fashion-mnist",
            "--per-class",
            &per_class.to_string(),
            "--out",
        ])
        .arg(out)
        .assert()
        .success()
        .stdout(contains(format!(
            "{} images of 28x28 in 10 classes",
            per_class * 10
        )));
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

#[test]
fn import_idx_writes_the_exact_pixels_under_class_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(dir.path(), 3);
    let images = idx::read_images(&fmnist("train-images-idx3-ubyte.gz")).expect("images");
    let labels = idx::read_labels(&fmnist("train-labels-idx1-ubyte.gz")).expect("labels");
    assert_eq!(
        (images.len(), labels.len(), images.rows, images.cols),
        (60000, 60000, 28, 28)
    );
    let written = files(dir.path());
    assert_eq!(written.len(), 30);
    for path in &written {
        let name = path.file_stem().expect("stem").to_string_lossy();
        let index: usize = name
            .trim_start_matches("train-")
            .parse()
            .expect("index in name");
        let class = path
            .parent()
            .and_then(|p| p.file_name())
            .expect("class")
            .to_string_lossy();
        assert_eq!(class, FASHION_MNIST_CLASSES[labels[index] as usize]);
        let png = image::open(path).expect("png").into_luma8();
        assert_eq!(
            png.as_raw().as_slice(),
            images.image(index),
            "{}",
            path.display()
        );
    }
}

#[test]
fn truncated_idx_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = idx::read_labels(&fmnist("t10k-labels-idx1-ubyte.gz")).expect("labels");
    let mut raw = vec![0, 0, 8, 1];
    raw.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    raw.extend_from_slice(&labels[..100]);
    let cut = dir.path().join("cut-labels-idx1-ubyte");
    std::fs::write(&cut, &raw).expect("write");
    let err = idx::read_labels(&cut).expect_err("truncated");
    assert!(
        err.to_string().contains("cut-labels") && err.to_string().contains("truncated"),
        "{err}"
    );
}

#[test]
fn split_is_stratified_deterministic_and_sorted_by_class_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(dir.path(), 10);
    std::fs::write(dir.path().join("bag/.DS_Store"), b"junk").expect("hidden file");
    let a = Dataset::open(dir.path(), 0.2, 7).expect("open");
    let b = Dataset::open(dir.path(), 0.2, 7).expect("open");
    let c = Dataset::open(dir.path(), 0.2, 8).expect("open");
    let mut sorted: Vec<&str> = FASHION_MNIST_CLASSES.to_vec();
    sorted.sort();
    assert_eq!(a.classes, sorted);
    assert!(a.split_here);
    assert_eq!((a.train.len(), a.val.len()), (80, 20));
    for class in 0..10 {
        assert_eq!(
            a.val.iter().filter(|s| s.class == class).count(),
            2,
            "2 of 10 per class"
        );
    }
    assert_eq!(a.val, b.val, "same seed, same split");
    assert_ne!(a.val, c.val, "another seed, another split");
    assert!(
        a.train
            .iter()
            .chain(&a.val)
            .all(|s| !s.path.to_string_lossy().contains(".DS_Store"))
    );
}

#[test]
fn unusable_layouts_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(&dir.path().join("train"), 2);
    std::fs::create_dir_all(dir.path().join("val/bag")).expect("mkdir");
    let err = Dataset::open(dir.path(), 0.2, 0).expect_err("val lacks classes");
    assert!(
        err.to_string().contains("differ from train/") && err.to_string().contains("coat"),
        "{err}"
    );

    let one = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(one.path().join("only")).expect("mkdir");
    std::fs::copy(
        &files(&dir.path().join("train"))[0],
        one.path().join("only/a.png"),
    )
    .expect("copy");
    let err = Dataset::open(one.path(), 0.2, 0).expect_err("one class");
    assert!(err.to_string().contains("only one class"), "{err}");

    std::fs::create_dir_all(one.path().join("empty")).expect("mkdir");
    let err = Dataset::open(one.path(), 0.2, 0).expect_err("empty class");
    assert!(err.to_string().contains("'empty' has no images"), "{err}");
}

#[test]
fn lint_finds_each_kind_of_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    import(&root.join("train"), 12);
    scion()
        .args([
            "data",
            "import-idx",
            "--preset",
            "fashion-mnist",
            "--set",
            "test",
            "--per-class",
            "6",
            "--out",
        ])
        .arg(root.join("val"))
        .assert()
        .success();
    // Leakage: a training image copied into val.
    let leaked = files(&root.join("train/bag"))[0].clone();
    std::fs::copy(&leaked, root.join("val/bag/leaked.png")).expect("copy");
    // A corrupt image, a stray file, a hidden folder.
    std::fs::write(
        root.join("train/coat/broken.png"),
        b"\x89PNG\r\n\x1a\n broken",
    )
    .expect("write");
    std::fs::write(root.join("train/coat/notes.txt"), b"to do").expect("write");
    std::fs::create_dir_all(root.join("train/.cache")).expect("mkdir");
    // A tiny and under-represented class.
    for f in files(&root.join("train/sandal")).iter().skip(3) {
        std::fs::remove_file(f).expect("rm");
    }
    // A class missing from val.
    std::fs::remove_dir_all(root.join("val/trouser")).expect("rm");

    let report = lint(root, LintOptions::default()).expect("lint");
    let text = report.render();
    let has = |sev: Severity, needle: &str| {
        report
            .findings
            .iter()
            .any(|f| f.severity == sev && f.message.contains(needle))
    };
    assert!(
        has(Severity::Error, "'trouser' is missing from val/"),
        "{text}"
    );
    assert!(has(Severity::Error, "broken.png"), "{text}");
    assert!(
        has(Severity::Error, "several splits") && has(Severity::Error, "leaked.png"),
        "{text}"
    );
    assert!(
        has(Severity::Warning, "'sandal' has only 3 images in train/"),
        "{text}"
    );
    assert!(has(Severity::Warning, "imbalanced train/"), "{text}");
    assert!(has(Severity::Warning, "--class-weight balanced"), "{text}");
    assert!(
        has(Severity::Warning, "not images") && text.contains("notes.txt"),
        "{text}"
    );
    assert_eq!(report.hidden_ignored, 1, "{text}");
    assert!(text.starts_with("class "), "a table first: {text}");

    scion()
        .args(["data", "lint"])
        .arg(root)
        .assert()
        .code(1)
        .stdout(contains("error: "));
}

#[test]
fn lint_with_only_warnings_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(dir.path(), 4);
    scion()
        .args(["data", "lint"])
        .arg(dir.path())
        .assert()
        .success()
        .stdout(contains("0 errors, 10 warnings"));
}

/// Frames a device collected (written by scion-edge's own collector, from Fashion-MNIST
/// images) become a training folder: guesses as folders, a person's confirmations and
/// moves win, unknowns and corrupt files are left out and counted, a rerun adds nothing.
#[test]
fn import_captures_turns_a_device_capture_folder_into_training_data() {
    use scion_edge::serve::collect::{CollectSection, Collector, Policy, read_sidecar, sidecar};
    use scion_edge::serve::hub::ModelInfo;

    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    import(&source, 2);
    let captures = dir.path().join("captures");
    let collector = Collector::start(&captures, CollectSection::default()).expect("collector");
    let labels: Vec<String> = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let model = ModelInfo {
        name: "fmnist".into(),
        sha256: "ab".repeat(32),
        path: "m.onnx".into(),
        engine: "tract".into(),
        classes: 10,
        ..Default::default()
    };
    let mut saved = Vec::new();
    for (seq, (class, guess, unknown)) in [
        ("bag", "bag", false),
        ("bag", "coat", false),
        ("sneaker", "sneaker", false),
        ("shirt", "shirt", true),
    ]
    .into_iter()
    .enumerate()
    {
        let png = files(&source.join(class))[0].clone();
        let image = scion_edge::preprocess::decode_rgb(&std::fs::read(&png).expect("png"), None)
            .expect("decode");
        let index = labels.iter().position(|l| l == guess).expect("label");
        let mut probs = vec![0.01; 10];
        probs[index] = 0.91;
        let top = vec![scion_edge::postprocess::Ranked {
            label: guess.into(),
            index,
            prob: 0.91,
        }];
        let side = sidecar(
            seq as u64,
            Policy::LowConfidence,
            &labels,
            &probs,
            &top,
            Some(unknown),
            Some(0.1),
            None,
            &model,
        );
        let (tx, rx) = crossbeam_channel::bounded(1);
        collector.submit(image, side, Some(tx));
        saved.push(rx.recv().expect("answer").expect("saved"));
    }
    // A person confirms the misread bag on the device's page, and moves the sneaker by hand.
    let bag_as_coat = saved[1]
        .path
        .strip_prefix(&captures)
        .expect("inside")
        .to_string_lossy()
        .into_owned();
    collector.confirm(&bag_as_coat, "bag").expect("confirm");
    collector.finish();
    std::fs::create_dir_all(captures.join("sandal")).expect("folder");
    let sneaker = &saved[2].path;
    let moved = captures
        .join("sandal")
        .join(sneaker.file_name().expect("name"));
    std::fs::rename(sneaker, &moved).expect("move");
    std::fs::rename(sneaker.with_extension("json"), moved.with_extension("json"))
        .expect("move sidecar");
    assert_eq!(read_sidecar(&moved).expect("sidecar").guess, "sneaker");
    std::fs::write(
        captures.join("bag").join("99-99.jpg"),
        b"\xff\xd8 not really",
    )
    .expect("corrupt");

    let data = dir.path().join("data");
    let run = |extra: &[&str]| {
        scion()
            .args(["data", "import-captures"])
            .arg(&captures)
            .arg("--out")
            .arg(&data)
            .args(extra)
            .assert()
    };
    run(&[])
        .code(2)
        .stdout(contains("3 images added (bag 2, sandal 1)"))
        .stdout(contains("1 left out: rejected as unknown"))
        .stdout(contains("99-99.jpg"));
    let names = |class: &str| files(&data.join(class)).len();
    assert_eq!(
        (
            names("bag"),
            names("sandal"),
            names("coat"),
            names("unknown")
        ),
        (2, 1, 0, 0)
    );
    // Again: nothing new, nothing twice.
    run(&[])
        .code(2)
        .stdout(contains("0 images added"))
        .stdout(contains("3 already there"));
    assert_eq!(files(&data).len(), 3);
    // Only what a person labelled.
    let confirmed = dir.path().join("confirmed");
    scion()
        .args(["data", "import-captures"])
        .arg(&captures)
        .arg("--out")
        .arg(&confirmed)
        .arg("--confirmed-only")
        .assert()
        .success()
        .stdout(contains("2 images added (bag 1, sandal 1)"))
        .stdout(contains("3 left out: not confirmed"));
    scion()
        .args(["data", "import-captures", "/nonexistent/captures", "--out"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(contains("/nonexistent/captures: not a folder"));
}
