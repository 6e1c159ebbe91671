//! Board detection from fixture trees, the profiles' facts, and Linux GPIO errors.

use std::path::Path;

use scion_boards::gpio::linux::{Direction, GpioErrorKind, LineSpec, request_line};
use scion_boards::{BoardId, Precision, detect, profile};

/// Write a fake root: device-tree model and compatible (NUL-separated, as the kernel does),
/// optionally `/etc/nv_tegra_release` and `/proc/meminfo`.
fn fixture(root: &Path, model: &str, compatible: &[&str], release: Option<&str>) {
    std::fs::create_dir_all(root.join("proc/device-tree")).expect("mkdir");
    std::fs::write(root.join("proc/device-tree/model"), format!("{model}\0"))
        .expect("write fixture");
    let mut compat = compatible.join("\0");
    compat.push('\0');
    std::fs::write(root.join("proc/device-tree/compatible"), compat).expect("write fixture");
    if let Some(release) = release {
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/nv_tegra_release"), release).expect("write fixture");
    }
}

#[test]
fn each_supported_board_is_recognised_from_its_device_tree() {
    let r36 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024\n";
    let r32 = "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, DATE: Fri Jun  9 04:25:08 UTC 2023\n";
    let cases: &[(&str, &[&str], Option<&str>, BoardId)] = &[
        (
            "NVIDIA Jetson Nano Developer Kit",
            &["nvidia,p3450-0000", "nvidia,tegra210"],
            Some(r32),
            BoardId::JetsonNano,
        ),
        (
            "quill",
            &["nvidia,p2771-0000", "nvidia,tegra186"],
            Some(r32),
            BoardId::JetsonTx2,
        ),
        (
            "NVIDIA Jetson Xavier NX Developer Kit",
            &["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"],
            None,
            BoardId::JetsonXavierNx,
        ),
        (
            "Jetson-AGX",
            &["nvidia,p2972-0000", "nvidia,tegra194"],
            None,
            BoardId::JetsonAgxXavier,
        ),
        (
            "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit",
            &[
                "nvidia,p3768-0000+p3767-0005",
                "nvidia,p3767-0005",
                "nvidia,tegra234",
            ],
            Some(r36),
            BoardId::JetsonOrinNano,
        ),
        (
            "NVIDIA Orin NX Developer Kit",
            &["nvidia,p3768-0000+p3767-0000", "nvidia,tegra234"],
            Some(r36),
            BoardId::JetsonOrinNx,
        ),
        (
            "Jetson AGX Orin",
            &["nvidia,p3737-0000+p3701-0005", "nvidia,tegra234"],
            Some(r36),
            BoardId::JetsonAgxOrin,
        ),
        (
            "Raspberry Pi 4 Model B Rev 1.4",
            &["raspberrypi,4-model-b", "brcm,bcm2711"],
            None,
            BoardId::RaspberryPi4,
        ),
        (
            "Raspberry Pi 5 Model B Rev 1.0",
            &["raspberrypi,5-model-b", "brcm,bcm2712"],
            None,
            BoardId::RaspberryPi5,
        ),
        // A carrier board scion does not list, found by its model string.
        (
            "Seeed reComputer J4012 (Jetson Orin NX)",
            &["seeed,recomputer"],
            None,
            BoardId::JetsonOrinNx,
        ),
    ];
    for (model, compatible, release, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(dir.path(), model, compatible, *release);
        let found = detect(dir.path(), "aarch64");
        assert_eq!(found.profile.id, *expected, "{model}");
        assert_eq!(found.model.as_deref(), Some(*model));
        assert!(found.warning.is_none(), "{model}: {:?}", found.warning);
        assert!(!found.profile.header.is_empty());
    }
}

#[test]
fn module_numbers_narrow_memory_and_accelerators_and_l4t_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(
        dir.path(),
        "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
        &[
            "nvidia,p3768-0000+p3767-0001",
            "nvidia,p3767-0001",
            "nvidia,tegra234",
        ],
        Some(
            "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023",
        ),
    );
    std::fs::write(
        dir.path().join("proc/meminfo"),
        "MemTotal:        7620600 kB\nMemFree: 1 kB\n",
    )
    .expect("write fixture");
    let found = detect(dir.path(), "aarch64");
    let p = &found.profile;
    assert_eq!(p.id, BoardId::JetsonOrinNx);
    assert_eq!(
        (p.memory_gib, p.dla_cores),
        (&[8u16][..], 1),
        "Orin NX 8GB has one DLA"
    );
    assert_eq!(p.gpu.expect("a GPU").compute_capability, (8, 7));
    assert_eq!(p.precision, Precision::Int8);
    assert_eq!(p.engine_order[0], "tensorrt");
    let l4t = found.l4t.expect("an L4T release");
    assert_eq!((l4t.major, l4t.revision.as_str()), (35, "4.1"));
    assert_eq!(l4t.to_string(), "R35.4.1 (JetPack 5)");
    assert!((found.memory_gib.expect("meminfo") - 7.27).abs() < 0.01);
}

#[test]
fn an_unknown_board_gets_the_generic_profile_and_a_warning_a_pc_gets_no_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(
        dir.path(),
        "Pine64 RockPro64",
        &["pine64,rockpro64", "rockchip,rk3399"],
        None,
    );
    let found = detect(dir.path(), "aarch64");
    assert_eq!(found.profile.id, BoardId::GenericAarch64);
    let warning = found.warning.expect("a warning");
    assert!(
        warning.contains("unrecognised board") && warning.contains("RockPro64"),
        "{warning}"
    );
    assert!(found.profile.header.is_empty());

    let empty = tempfile::tempdir().expect("tempdir");
    let pc = detect(empty.path(), "x86_64");
    assert_eq!(pc.profile.id, BoardId::GenericX86_64);
    assert!(pc.warning.is_none() && pc.model.is_none());
}

#[test]
fn garbage_in_the_device_tree_does_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("proc/device-tree")).expect("mkdir");
    std::fs::write(
        dir.path().join("proc/device-tree/model"),
        [0xff, 0xfe, 0, 0, 0x80],
    )
    .expect("write fixture");
    std::fs::write(dir.path().join("proc/device-tree/compatible"), [0u8; 3])
        .expect("write fixture");
    std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
    std::fs::write(dir.path().join("etc/nv_tegra_release"), "R").expect("write fixture");
    let found = detect(dir.path(), "riscv64");
    assert_eq!(found.profile.id, BoardId::Generic);
    assert!(found.l4t.is_none());
}

#[test]
fn header_tables_are_well_formed() {
    // Power and ground pins of the 40-pin header are never GPIOs.
    const POWER_OR_GROUND: [u8; 12] = [1, 2, 4, 6, 9, 14, 17, 20, 25, 30, 34, 39];
    let named = BoardId::ALL
        .into_iter()
        .filter(|id| !id.as_str().starts_with("generic"));
    assert_eq!(named.clone().count(), 9);
    let pi = profile(BoardId::RaspberryPi4);
    for id in named {
        let p = profile(id);
        let mut pins: Vec<u8> = p.header.iter().map(|h| h.pin).collect();
        pins.sort();
        pins.dedup();
        assert_eq!(pins.len(), p.header.len(), "{id:?}: duplicate pins");
        for h in p.header {
            assert!((1..=40).contains(&h.pin), "{id:?} pin {}", h.pin);
            assert!(
                !POWER_OR_GROUND.contains(&h.pin),
                "{id:?} pin {} is power/ground",
                h.pin
            );
            // Every Jetson GPIO pin exists on the Raspberry Pi layout too (same header).
            assert!(pi.header_pin(h.pin).is_some(), "{id:?} pin {}", h.pin);
        }
        assert!(p.header.len() >= 21, "{id:?}: {} pins", p.header.len());
    }
    // Spot checks against NVIDIA's and the Raspberry Pi's tables.
    let orin = profile(BoardId::JetsonOrinNano);
    let p7 = orin.header_pin(7).expect("a header pin");
    assert_eq!(
        (p7.chip, p7.line, p7.soc_name),
        ("tegra234-gpio", 144, "PAC.06")
    );
    let agx = profile(BoardId::JetsonAgxOrin)
        .header_pin(16)
        .copied()
        .expect("a header pin");
    assert_eq!((agx.chip, agx.line), ("tegra234-gpio-aon", 9));
    let pi5 = profile(BoardId::RaspberryPi5)
        .header_pin(11)
        .copied()
        .expect("a header pin");
    assert_eq!((pi5.chip, pi5.line), ("pinctrl-rp1", 17));
    assert_eq!(
        profile(BoardId::JetsonNano)
            .gpu
            .expect("a GPU")
            .compute_capability,
        (5, 3)
    );
    assert_eq!(profile(BoardId::JetsonNano).precision, Precision::Fp16);
    assert!(profile(BoardId::RaspberryPi4).gpu.is_none());
}

#[test]
fn gpio_lines_that_do_not_exist_give_errors_that_name_them() {
    let orin = profile(BoardId::JetsonOrinNano);
    let ground = request_line(
        &LineSpec::HeaderPin(6),
        &orin,
        Direction::Output(false),
        "scion-test",
    )
    .err()
    .expect("an error");
    assert_eq!(ground.kind(), GpioErrorKind::NotOnHeader);
    assert!(
        ground.to_string().contains("header pin 6") && ground.to_string().contains("7, 11"),
        "{ground}"
    );

    let generic = profile(BoardId::GenericX86_64);
    let err = request_line(
        &LineSpec::HeaderPin(7),
        &generic,
        Direction::Input,
        "scion-test",
    )
    .err()
    .expect("an error");
    assert_eq!(err.kind(), GpioErrorKind::NotOnHeader);
    assert!(err.to_string().contains("chip and line"), "{err}");

    // This machine has no GPIO chips (or not this one): the error names the chip.
    let err = request_line(
        &LineSpec::HeaderPin(7),
        &orin,
        Direction::Output(false),
        "scion-test",
    )
    .err()
    .expect("an error");
    assert_eq!(err.kind(), GpioErrorKind::NoSuchChip, "{err}");
    assert!(err.to_string().contains("tegra234-gpio"), "{err}");

    let err = request_line(
        &LineSpec::ChipLine {
            chip: "/dev/gpiochip99".into(),
            line: 3,
        },
        &generic,
        Direction::Input,
        "scion-test",
    )
    .err()
    .expect("an error");
    assert_eq!(err.kind(), GpioErrorKind::NoSuchChip, "{err}");
    assert!(err.to_string().contains("/dev/gpiochip99"), "{err}");
}
