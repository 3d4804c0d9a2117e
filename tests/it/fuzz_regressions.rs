//! The fuzz corpus (`fuzz/corpus/TARGET/`) and every input a fuzz run ever crashed on
//! (`fuzz/regressions/TARGET/`) replayed on the stable toolchain through the same checks the
//! fuzz targets run (`seedvault::fuzzing`), so CI holds the fixes without nightly or
//! cargo-fuzz. See docs/FUZZING.md.

use std::path::{Path, PathBuf};

use seedvault::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// A fuzz target's check of one input.
type Check = fn(&[u8]);

/// The files of `dir/TARGET/` for every target, with the target's check.
fn inputs(dir: &Path) -> Vec<(PathBuf, Check)> {
    let mut inputs = Vec::new();
    for (name, check) in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                inputs.push((path, check));
            }
        }
    }
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    inputs
}

fn replay(dir: &Path) -> usize {
    let inputs = inputs(dir);
    for (path, check) in &inputs {
        let bytes = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{} breaks its fuzz target's properties",
            path.display()
        );
    }
    inputs.len()
}

#[test]
fn every_fuzz_target_has_a_seed_corpus_that_passes_its_checks() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let seeds = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        assert!(seeds > 0, "fuzz/corpus/{name}/ holds no seed input");
    }
    assert!(replay(&fuzz_dir().join("corpus")) >= TARGETS.len());
}

#[test]
fn every_input_a_fuzz_run_crashed_on_stays_fixed() {
    replay(&fuzz_dir().join("regressions"));
}

#[test]
fn every_fuzz_target_in_the_fuzz_crate_is_replayed_here() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .filter(|n| *n != "seedvault-fuzz")
        .collect();
    let replayed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        declared, replayed,
        "fuzz/Cargo.toml's [[bin]]s and seedvault::fuzzing::TARGETS"
    );
}

/// The QR target's seed in `fuzz/corpus/qr/` is such a screenshot; this one, drawn fresh by the
/// tests' own QR helper, must pass the same check.
#[test]
fn a_screenshot_of_an_otpauth_qr_code_passes_the_qr_target() {
    // Small (2 pixels a module) so that a fuzz run spends its time in the decoder, not in
    // inflating pixels.
    let mut canvas = image::GrayImage::from_pixel(120, 120, image::Luma([255]));
    let uri = "otpauth://totp/Fuzz:ada@example.org?secret=JBSWY3DPEHPK3PXP";
    crate::common::qr::draw(&mut canvas, uri, 2, 0, 0);
    let png = crate::common::qr::png(&canvas);
    assert!(seedvault::qr::decode(&png).is_ok());
    seedvault::fuzzing::qr(&png);
}
