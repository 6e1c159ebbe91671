//! Looking inside the representation, on real weights and real images: embeddings and
//! their shards, nearest neighbours (the Fashion-MNIST leave-one-out target), the data
//! audit with a planted leak and mislabel, top-activating images, filters, activation
//! maps, probes and the projection; every PNG is opened and checked.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use scion_tests::{asset, ort_lib};
use scion_trainer::represent::audit::label_agreement;
use scion_trainer::represent::embedding::Embeddings;
use scion_trainer::represent::knn::{Index, Metric};

fn lite0() -> PathBuf {
    asset("models/efficientnet-lite0.onnx")
}

fn scion() -> Command {
    let mut cmd = Command::cargo_bin("scion").expect("binary built");
    cmd.env("ORT_DYLIB_PATH", ort_lib()).env_remove("RUST_LOG");
    cmd
}

/// Fashion-MNIST from Debian's package: `per_class` images per class under `out`, from the
/// training set, or the first `first` of the test set.
fn fmnist(out: &Path, per_class: Option<usize>, first: Option<usize>) {
    let mut cmd = scion();
    cmd.args(["data", "import-idx", "--preset", "fashion-mnist", "--out"])
        .arg(out);
    if let Some(n) = per_class {
        cmd.arg("--per-class").arg(n.to_string());
    }
    if let Some(n) = first {
        cmd.args(["--set", "test", "--first"]).arg(n.to_string());
    }
    cmd.assert().success();
}

/// An untrained small CNN (another model than Lite0) imported into `dir`.
fn small_cnn(dir: &Path) -> PathBuf {
    let out = dir.join("small-cnn.onnx");
    Command::cargo_bin("scion-edge")
        .expect("binary built")
        .args(["import", "small-cnn", "--out"])
        .arg(&out)
        .assert()
        .success();
    out
}

/// Open a PNG and check it is a real picture: the size, many colours, real contrast.
fn check_png(path: &Path, min_w: u32, min_h: u32) -> image::RgbImage {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    assert!(w >= min_w && h >= min_h, "{}: {w}x{h}", path.display());
    let mut colours = std::collections::HashSet::new();
    let mut sum = 0f64;
    let mut sq = 0f64;
    for p in img.pixels() {
        colours.insert(p.0);
        let v = f64::from(p.0[0]) + f64::from(p.0[1]) + f64::from(p.0[2]);
        sum += v;
        sq += v * v;
    }
    let n = f64::from(w * h);
    let std = (sq / n - (sum / n).powi(2)).sqrt();
    assert!(
        colours.len() > 50,
        "{}: {} colours",
        path.display(),
        colours.len()
    );
    assert!(
        std > 20.0,
        "{}: flat picture (std {std:.1})",
        path.display()
    );
    img
}

fn stdout_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("JSON on stdout")
}

#[test]
fn fashion_mnist_neighbours_shards_and_projection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, cache) = (dir.path().join("fmnist"), dir.path().join("cache"));
    fmnist(&data, Some(100), None);
    let full = dir.path().join("all.safetensors");
    scion()
        .arg("embed")
        .arg(&data)
        .arg("--model")
        .arg(lite0())
        .arg("--out")
        .arg(&full)
        .arg("--cache")
        .arg(&cache)
        .assert()
        .success()
        .stdout(contains("1000 of 1000 images x 1280 values of 'features'"));
    let e = Embeddings::load(&full).expect("load embeddings");
    assert_eq!((e.items.len(), e.dim), (1000, 1280));
    assert!(
        e.items
            .iter()
            .all(|i| i.label.is_some() && i.split.is_none())
    );

    // The target: leave-one-out, the 5 nearest neighbours (Euclidean, frozen Lite0
    // features) share the image's label in >= 72% of cases (numpy + onnxruntime: ~76%).
    let (_, labels) = e.label_indices();
    let neighbours = Index::new(e.data.clone(), e.dim, Metric::Euclidean).leave_one_out(5);
    let agreement = label_agreement(&labels, &neighbours).expect("labelled");
    eprintln!(
        "5-NN leave-one-out label agreement: {:.1}%",
        100.0 * agreement
    );
    assert!(agreement >= 0.72, "{agreement}");

    // Shards from a scheduler's array job merge into exactly the unsharded file.
    let mut parts = Vec::new();
    for i in 0..3 {
        let part = dir.path().join(format!("part{i}.safetensors"));
        scion()
            .arg("embed")
            .arg(&data)
            .arg("--model")
            .arg(lite0())
            .arg("--shard")
            .arg(format!("{i}/3"))
            .arg("--out")
            .arg(&part)
            .arg("--cache")
            .arg(&cache)
            .assert()
            .success();
        parts.push(part);
    }
    let merged = dir.path().join("merged.safetensors");
    scion()
        .arg("merge")
        .args(&parts)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&merged).expect("merged"),
        std::fs::read(&full).expect("full"),
        "merged shards differ from the unsharded embeddings"
    );
    scion()
        .arg("merge")
        .args(&parts[..2])
        .arg("--out")
        .arg(dir.path().join("x.safetensors"))
        .assert()
        .code(1)
        .stderr(contains("shards missing: 2/3"));

    // Similar: an indexed image finds itself at distance 0, then its own class mostly.
    let query = e.items[0].path.clone();
    let sheet = dir.path().join("similar.png");
    let answers = stdout_json(
        scion()
            .args(["similar", "--index"])
            .arg(&full)
            .arg("--query")
            .arg(&query)
            .args(["-k", "6", "--format", "json", "--sheet"])
            .arg(&sheet)
            .arg("--cache")
            .arg(&cache),
    );
    let first = &answers[0]["neighbours"];
    assert_eq!(answers[0]["query"], query.as_str());
    assert_eq!(first.as_array().expect("list").len(), 6);
    assert_eq!(first[0]["path"], query.as_str());
    assert!(first[0]["distance"].as_f64().expect("distance") < 1e-4);
    let same = first
        .as_array()
        .expect("list")
        .iter()
        .filter(|n| n["label"] == e.items[0].label.as_deref().expect("label"))
        .count();
    assert!(same >= 4, "{first}");
    // One row: the query and 6 neighbours of 112 px.
    check_png(&sheet, 7 * 112, 112);

    // An index of another model's features is refused, naming both.
    let other = small_cnn(dir.path());
    scion()
        .args(["similar", "--index"])
        .arg(&full)
        .arg("--model")
        .arg(&other)
        .arg("--query")
        .arg(&query)
        .arg("--cache")
        .arg(&cache)
        .assert()
        .code(1)
        .stderr(contains("built with another model").and(contains("small-cnn.onnx")));

    // The 2-D projection, coloured by label.
    let png = dir.path().join("pca.png");
    scion()
        .args(["project", "--index"])
        .arg(&full)
        .arg("--out")
        .arg(&png)
        .assert()
        .success()
        .stdout(contains("PCA of 'features' (1000 images"));
    check_png(&png, 800, 600);
}

#[test]
fn audit_finds_planted_leaks_a_mislabel_and_an_outlier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fmnist(&data.join("train"), Some(20), None);
    fmnist(&data.join("val"), None, Some(100));
    // A training image at twice the size in validation: leakage that a file hash would
    // not catch.
    let leaked = data
        .join("train/bag")
        .read_dir()
        .expect("bag")
        .flatten()
        .next()
        .expect("a bag")
        .path();
    let copy = data.join("val/bag/copied-from-train.png");
    image::open(&leaked)
        .expect("decode")
        .resize(56, 56, image::imageops::FilterType::Triangle)
        .save(&copy)
        .expect("re-encode");
    assert_ne!(
        std::fs::read(&leaked).expect("read"),
        std::fs::read(&copy).expect("read")
    );
    // And a byte-for-byte copy of a sneaker.
    let sneaker = data
        .join("train/sneaker")
        .read_dir()
        .expect("sneaker")
        .flatten()
        .next()
        .expect("a sneaker")
        .path();
    let exact = data.join("val/sneaker/exact-copy.png");
    std::fs::copy(&sneaker, &exact).expect("copy");
    // A trouser filed as a bag: a mislabel.
    let trouser = data
        .join("train/trouser")
        .read_dir()
        .expect("trouser")
        .flatten()
        .next()
        .expect("a trouser")
        .path();
    let planted = data.join("train/bag/really-a-trouser.png");
    std::fs::rename(&trouser, &planted).expect("move");

    // A photo among the clothes: an outlier.
    let photo = data.join("train/bag/puppy.jpg");
    std::fs::copy(asset("assets/photos/puppy.jpg"), &photo).expect("copy");

    let out = dir.path().join("audit");
    let report = stdout_json(
        scion()
            .args(["data", "audit"])
            .arg(&data)
            .arg("--model")
            .arg(lite0())
            .args(["--format", "json", "--out"])
            .arg(&out)
            .arg("--cache")
            .arg(dir.path().join("cache")),
    );
    // 200 training images (one of them the planted trouser), 100 validation images and
    // the two copies and the photo.
    assert_eq!(report["images"], 303);
    let leaks: Vec<[&str; 2]> = report["duplicates"]
        .as_array()
        .expect("duplicates")
        .iter()
        .filter(|d| d["cross_split"] == true)
        .map(|d| [d["a"].as_str().expect("a"), d["b"].as_str().expect("b")])
        .collect();
    eprintln!(
        "leaks: {leaks:?}, median nearest {}",
        report["median_nearest"]
    );
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    for (original, copy) in [(&leaked, &copy), (&sneaker, &exact)] {
        assert!(
            leaks.contains(&[path(original).as_str(), path(copy).as_str()]),
            "{} ~ {} not found in {leaks:?}",
            original.display(),
            copy.display()
        );
    }
    let suspect = report["mislabelled"]
        .as_array()
        .expect("mislabelled")
        .iter()
        .find(|s| s["path"] == planted.to_str().expect("utf-8"))
        .unwrap_or_else(|| {
            panic!(
                "the planted mislabel was not flagged: {}",
                report["mislabelled"]
            )
        });
    assert_eq!(suspect["label"], "bag");
    assert_eq!(suspect["suggested"], "trouser");
    let outliers = report["outliers"].as_array().expect("outliers");
    assert_eq!(outliers[0]["path"], path(&photo), "{outliers:?}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("audit.json")).expect("audit.json"))
            .expect("json");
    assert_eq!(written, report);
    check_png(&out.join("audit.png"), 400, 200);
}

#[test]
fn activations_filters_and_maps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    fmnist(&data, Some(4), None);
    let png = dir.path().join("act.png");
    let found = stdout_json(
        scion()
            .args(["activations", "--model"])
            .arg(lite0())
            .arg("--data")
            .arg(&data)
            .args(["--units", "top:3", "-k", "5", "--format", "json", "--out"])
            .arg(&png)
            .arg("--cache")
            .arg(&cache),
    );
    let units = found.as_array().expect("units");
    assert_eq!(units.len(), 3);
    for u in units {
        let acts: Vec<f64> = u["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["activation"].as_f64().expect("value"))
            .collect();
        assert_eq!(acts.len(), 5);
        assert!(acts.windows(2).all(|w| w[0] >= w[1]), "{acts:?}");
    }
    // Units come most selective first.
    assert!(units[0]["selectivity"].as_f64() >= units[2]["selectivity"].as_f64());
    check_png(&png, 5 * 96, 3 * 96);

    // A conv tensor's units are its channels (channel means), checked against the range.
    scion()
        .args(["activations", "--model"])
        .arg(lite0())
        .arg("--data")
        .arg(&data)
        .args(["--unit", "2,7", "--tensor", "blocks.15.project.conv", "-o"])
        .arg(dir.path().join("conv.png"))
        .arg("--cache")
        .arg(&cache)
        .assert()
        .success()
        .stdout(contains("unit 2").and(contains("unit 7")));
    scion()
        .args(["activations", "--model"])
        .arg(lite0())
        .arg("--data")
        .arg(&data)
        .args(["--unit", "1280"])
        .arg("--cache")
        .arg(&cache)
        .assert()
        .code(1)
        .stderr(contains(
            "--unit 1280: out of range: tensor 'features' has 1280 units",
        ));
    scion()
        .args(["activations", "--model"])
        .arg(lite0())
        .arg("--data")
        .arg(&data)
        .args(["--unit", "0", "--tensor", "block.3.conv"])
        .arg("--cache")
        .arg(&cache)
        .assert()
        .code(1)
        .stderr(
            contains("--tensor block.3.conv")
                .and(contains("no tensor named 'block.3.conv'"))
                .and(contains("candidates: [blocks.3.")),
        );

    // The stem's 32 filters of 3x3x3 as colour pictures.
    let filters = dir.path().join("filters.png");
    scion()
        .args(["filters", "--model"])
        .arg(lite0())
        .arg("--out")
        .arg(&filters)
        .assert()
        .success()
        .stdout(contains("32 filters of 3x3x3"));
    check_png(&filters, 16 * 48, 2 * 48);

    // The stem's activation maps over a photo, as heat maps.
    let maps = dir.path().join("maps.png");
    scion()
        .args(["filters", "--model"])
        .arg(lite0())
        .arg("--image")
        .arg(asset("assets/photos/puppy.jpg"))
        .args(["--tensor", "stem.relu6", "--max-maps", "16", "--out"])
        .arg(&maps)
        .arg("--cache")
        .arg(&cache)
        .assert()
        .success()
        .stdout(contains("16 of 32 maps of 112x112"));
    check_png(&maps, 8 * 96, 3 * 96);
    scion()
        .args(["filters", "--model"])
        .arg(lite0())
        .arg("--image")
        .arg(asset("assets/photos/puppy.jpg"))
        .args(["--tensor", "features"])
        .arg("--cache")
        .arg(&cache)
        .assert()
        .code(1)
        .stderr(contains("not a spatial map"));
}

#[test]
fn probe_ranks_pretrained_features_above_an_untrained_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fmnist(&data, Some(20), None);
    let scratch = small_cnn(dir.path());
    let out = dir.path().join("probe");
    scion()
        .arg("probe")
        .arg("--data")
        .arg(&data)
        .arg("--backbone")
        .arg(lite0())
        .arg("--backbone")
        .arg(&scratch)
        .args(["--folds", "4", "--epochs", "20", "--out"])
        .arg(&out)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .assert()
        .success()
        .stdout(contains("efficientnet-lite0").and(contains("small-cnn")));
    let arms: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("probe.json")).expect("probe.json"))
            .expect("json");
    let mean = |i: usize| arms[i]["mean"].as_f64().expect("mean");
    assert_eq!(arms[0]["fold_accuracy"].as_array().expect("folds").len(), 4);
    assert_eq!(arms[1]["dim"], 128);
    assert!(
        mean(0) > mean(1),
        "lite0 {} vs untrained {}",
        mean(0),
        mean(1)
    );
    assert!(mean(0) > 0.5, "{}", mean(0));
    check_png(&out.join("probe.png"), 400, 300);
}
