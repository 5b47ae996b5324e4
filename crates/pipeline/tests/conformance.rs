//! ONNX's own backend test cases through our engine (issue 13, item 1): every case of the
//! `onnx` wheel's `pytorch-converted`, `pytorch-operator`, `simple` and `light` folders, at
//! the tolerances of ONNX's runner. Prints a pass / fail / unsupported table; fails when a
//! case of `conformance-expected-pass.txt` (beside this file) does not pass, so that a case
//! that passed cannot regress unnoticed. A case that newly passes is printed, to be added.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use subsetq_onnx::test_assets::onnx_backend_data;
use subsetq_pipeline::run::{
    conformance_case, light_model_inputs, numbered_files, read_tensor_file, Outcome, Tolerance,
    ONNX_TOLERANCE,
};

const FOLDERS: [&str; 3] = ["pytorch-converted", "pytorch-operator", "simple"];

/// The light models' tolerances in ONNX's runner (`onnx.backend.test.case.model`): DenseNet's
/// rtol is 2e-3, the others use the default.
fn light_tolerance(model: &str) -> Tolerance {
    if model == "densenet121" {
        Tolerance {
            rtol: 2e-3,
            ..ONNX_TOLERANCE
        }
    } else {
        ONNX_TOLERANCE
    }
}

/// A case's tolerance: its `data.json` may override the runner's default.
fn case_tolerance(dir: &Path) -> Tolerance {
    let Ok(text) = std::fs::read_to_string(dir.join("data.json")) else {
        return ONNX_TOLERANCE;
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Tolerance {
        rtol: json["rtol"].as_f64().unwrap_or(ONNX_TOLERANCE.rtol),
        atol: json["atol"].as_f64().unwrap_or(ONNX_TOLERANCE.atol),
    }
}

/// Runs every data set of a case folder (`model.onnx`, `test_data_set_*`); the first failure
/// is the case's outcome.
fn folder_case(dir: &Path) -> Outcome {
    let tol = case_tolerance(dir);
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Fail("no test_data_set_* folder".to_string());
    }
    let mut worst = 0.0f64;
    for set in sets {
        let read = |prefix: &str| -> Result<Vec<_>, String> {
            let files = numbered_files(&set, prefix).map_err(|e| e.to_string())?;
            files
                .iter()
                .map(|f| read_tensor_file(f).map_err(|e| e.one_line()))
                .collect()
        };
        let (inputs, expected) = match (read("input"), read("output")) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => return Outcome::Unsupported(e),
        };
        match conformance_case(&dir.join("model.onnx"), &inputs, &expected, tol) {
            Outcome::Pass(d) => worst = worst.max(d),
            other => return other,
        }
    }
    Outcome::Pass(worst)
}

fn light_case(model: &Path) -> Outcome {
    let stem = model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let expected = match read_tensor_file(&model.with_file_name(format!("{stem}_output_0.pb"))) {
        Ok(t) => t,
        Err(e) => return Outcome::Unsupported(e.one_line()),
    };
    let inputs = match subsetq_onnx::load(model)
        .map_err(|e| e.to_string())
        .and_then(|m| light_model_inputs(&m).map_err(|e| e.one_line()))
    {
        Ok(i) => i,
        Err(e) => return Outcome::Unsupported(e),
    };
    let tol = light_tolerance(stem.trim_start_matches("light_"));
    conformance_case(model, &inputs, &[expected], tol)
}

/// Every case: `folder/name` → outcome.
fn run_all() -> Option<BTreeMap<String, Outcome>> {
    let mut out = BTreeMap::new();
    for folder in FOLDERS {
        let dir = onnx_backend_data(folder)?;
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("readable folder")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("model.onnx").is_file())
            .collect();
        cases.sort();
        for case in cases {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(format!("{folder}/{name}"), folder_case(&case));
        }
    }
    let light = onnx_backend_data("light")?;
    let mut models: Vec<PathBuf> = std::fs::read_dir(&light)
        .expect("readable folder")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    for model in models {
        let t0 = std::time::Instant::now();
        let name = model.file_stem().unwrap().to_string_lossy().into_owned();
        let outcome = light_case(&model);
        eprintln!("light/{name}: {:.1} s", t0.elapsed().as_secs_f64());
        out.insert(format!("light/{name}"), outcome);
    }
    Some(out)
}

#[test]
fn onnx_backend_cases_pass_or_are_listed() {
    let Some(results) = run_all() else { return };
    let expected: Vec<String> = include_str!("conformance-expected-pass.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();

    // The table: per folder, pass / fail / unsupported.
    let mut per_folder: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for (name, outcome) in &results {
        let folder = name.split('/').next().unwrap_or_default();
        let row = per_folder.entry(folder).or_default();
        match outcome {
            Outcome::Pass(_) => row[0] += 1,
            Outcome::Fail(_) => row[1] += 1,
            Outcome::Unsupported(_) => row[2] += 1,
        }
    }
    println!("\n| folder | pass | fail | unsupported |\n|---|---|---|---|");
    for (folder, [p, f, u]) in &per_folder {
        println!("| {folder} | {p} | {f} | {u} |");
    }
    println!();
    for (name, outcome) in &results {
        match outcome {
            Outcome::Pass(d) => println!("pass         {name} (max abs diff {d:.2e})"),
            Outcome::Fail(why) => println!("FAIL         {name}: {why}"),
            Outcome::Unsupported(why) => {
                // The engine's message lists every supported operator: not needed here.
                let why = why.split("; supported:").next().unwrap_or(why);
                println!("unsupported  {name}: {why}")
            }
        }
    }

    let regressed: Vec<String> = expected
        .iter()
        .filter(|name| !matches!(results.get(*name), Some(Outcome::Pass(_))))
        .map(|name| format!("{name}: {:?}", results.get(name)))
        .collect();
    let new: Vec<&String> = results
        .iter()
        .filter(|(name, o)| matches!(o, Outcome::Pass(_)) && !expected.contains(name))
        .map(|(name, _)| name)
        .collect();
    if !new.is_empty() {
        println!("\nnewly passing (add to conformance-expected-pass.txt):");
        for n in &new {
            println!("{n}");
        }
    }
    assert!(
        regressed.is_empty(),
        "expected to pass but did not:\n{}",
        regressed.join("\n")
    );
    // Guard against an empty run passing: the list is not empty and every case was found.
    assert!(!expected.is_empty());
}
