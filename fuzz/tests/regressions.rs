//! Replays, on stable and in `make test`, every hand-made seed (`seeds/<target>/`) and every
//! input a fuzzer found to fail (`regressions/<target>/`) through its target: a fixed crash
//! stays fixed. `make fuzz` runs the targets themselves.

use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use tollgate_fuzz::TARGETS;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                // Not .gitkeep and the like.
                .filter(|path| {
                    path.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_passes_its_target() {
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        for folder in ["seeds", "regressions"] {
            for file in files(&root().join(folder).join(name)) {
                let data = fs::read(&file).unwrap();
                if catch_unwind(|| target(data.as_slice())).is_err() {
                    failed.push(file);
                }
            }
        }
    }
    assert!(failed.is_empty(), "failing inputs: {failed:#?}");
}

#[test]
fn every_target_has_a_binary_and_seeds() {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            root()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz_targets/{name}.rs"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "Cargo.toml has no [[bin]] {name}"
        );
        assert!(
            !files(&root().join("seeds").join(name)).is_empty(),
            "seeds/{name}/ is empty"
        );
    }
    // A regression filed under a misspelt target would never be replayed.
    for folder in ["seeds", "regressions", "fuzz_targets", "dicts"] {
        for entry in fs::read_dir(root().join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if stem.starts_with('.') || stem == "README" {
                continue;
            }
            assert!(
                TARGETS.iter().any(|(name, _)| *name == stem),
                "{} names no target",
                path.display()
            );
        }
    }
}

/// The smallest inputs, which a fuzzer tries first, pass every target.
#[test]
fn every_target_takes_empty_and_tiny_inputs() {
    for (_, target) in TARGETS {
        for data in [&b""[..], b"\n", b"\0", b"\xff", b":", b"\n\n\n"] {
            target(data);
        }
    }
}
