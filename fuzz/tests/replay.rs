//! Every fuzz target on its seeds (fuzz/seeds/TARGET) and on every input that once crashed
//! it (fuzz/regressions/TARGET): the targets stay built and their crashes stay fixed without
//! a fuzzer. Each regression file's name says what it broke.

use std::path::Path;

use subsetq_fuzz::TARGETS;

fn inputs(folder: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

#[test]
fn every_target_survives_its_seeds_and_past_crashes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = 0;
    for &(name, body) in TARGETS {
        for folder in ["seeds", "regressions"] {
            for file in inputs(&root.join(folder).join(name)) {
                let data = std::fs::read(&file).expect("read a fuzz input");
                body(&data);
                seeds += usize::from(folder == "seeds");
            }
        }
        assert!(
            !inputs(&root.join("seeds").join(name)).is_empty(),
            "target {name} has no seeds"
        );
    }
    assert!(seeds >= TARGETS.len());
}
