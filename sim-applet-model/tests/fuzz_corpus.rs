//! Replays the committed seed corpus of every fuzz target (`fuzz/corpus/<target>/seed-*`; the
//! .gitignore lets nothing else in) through the target's checks in
//! `sim_applet_model::fuzzing`, the same functions `fuzz/fuzz_targets/*.rs` call. libFuzzer
//! needs a nightly build, so this is what the stable suite and CI run of the fuzzing: a seed
//! that panics a decoder or changes in a round trip fails here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sim_applet_model::fuzzing;

type Check = fn(&[u8]) -> usize;

/// Every fuzz target and its checks.
const TARGETS: [(&str, Check); 3] = [
    ("ota_decode", fuzzing::ota_decode),
    ("cat_decode", fuzzing::cat_decode),
    ("text_decode", fuzzing::text_decode),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The committed seeds of `target`, by name; fails when the directory is missing or has none.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} cannot be read: {e}", dir.display()));
    let mut seeds: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            name.starts_with("seed-")
                .then(|| (name, std::fs::read(&p).unwrap()))
        })
        .collect();
    seeds.sort();
    assert!(
        !seeds.is_empty(),
        "corpus directory {} has no seed-* file",
        dir.display()
    );
    seeds
}

/// Runs every seed of `target` through `check`. Each must pass the checks, and at least one of
/// the target's decoders must accept it: a seed that every decoder refuses exercises no round
/// trip and seeds the fuzzer with nothing.
fn replay(target: &str, check: Check) {
    for (name, bytes) in seeds(target) {
        let accepted = std::panic::catch_unwind(|| check(&bytes))
            .unwrap_or_else(|_| panic!("{target}/{name} fails the fuzz target's checks"));
        assert!(
            accepted > 0,
            "{target}/{name}: no decoder accepts it, so it reaches no round trip"
        );
    }
}

#[test]
fn every_ota_decode_seed_decodes_and_round_trips() {
    replay("ota_decode", fuzzing::ota_decode);
}

#[test]
fn every_cat_decode_seed_decodes_and_round_trips() {
    replay("cat_decode", fuzzing::cat_decode);
}

#[test]
fn every_text_decode_seed_decodes_and_round_trips() {
    replay("text_decode", fuzzing::text_decode);
}

#[test]
fn every_fuzz_target_has_its_corpus_replayed_here() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    on_disk.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    replayed.sort();
    assert_eq!(
        on_disk, replayed,
        "a fuzz target without a replay here (or a replay without a target)"
    );
    for (target, _) in TARGETS {
        let source =
            std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{target}.rs")))
                .unwrap();
        assert!(
            source.contains(&format!("sim_applet_model::fuzzing::{target}(data)")),
            "fuzz_targets/{target}.rs does not run fuzzing::{target}, so replaying it here \
             checks something else than the fuzzer does"
        );
    }
}
