//! The bodies of subsetq's fuzz targets, one function per target, each taking the fuzzer's
//! bytes. A body returns normally on any input (an error is a normal result); a panic, an
//! abort, a hang or unbounded memory is a bug in the loader it drives.
//!
//! The libFuzzer binaries in `fuzz_targets/` (feature `libfuzzer`) only call these; the
//! corpus replay test (`tests/replay.rs`) runs them on the seeds and on every input that once
//! crashed, so the targets stay built and the crashes stay fixed in the ordinary workspace
//! build. `fuzz/README.md` says how to fuzz.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use subsetq_data::{Color, LabelSource, Loader, Preprocess};
use subsetq_engine::Plan;

/// A target's body: the fuzzer's bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name (the names of the binaries and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("onnx_plan", onnx_plan),
    ("compact_fold", compact_fold),
    ("sidecar", sidecar),
    ("idx", idx),
    ("image", image),
];

/// The ONNX loader and the graph planner: decode, list the weight layers, cut blocks, fold
/// batch norms and plan the graph (which folds constant subgraphs first).
pub fn onnx_plan(data: &[u8]) {
    let Ok(model) = subsetq_onnx::decode(data) else {
        return;
    };
    let _ = model.opset();
    if let Ok(layers) = model.weight_layers() {
        for l in &layers {
            let _ = l.out_channels();
        }
    }
    let _ = model.blocks();
    let _ = subsetq_onnx::fold_batch_norm(&model);
    let Ok(plan) = Plan::from_model(&model) else {
        return;
    };
    // Shape inference at the declared input shapes (free dims as 1), dims as large as the
    // model says: it computes no tensor, so it must not allocate by them either.
    let given: Vec<(&str, Vec<usize>)> = plan
        .inputs()
        .iter()
        .map(|i| {
            let _ = i.describe();
            let dims = i.dims.as_ref().map_or(vec![1, 1, 4, 4], |d| {
                d.iter().map(|x| x.unwrap_or(1)).collect()
            });
            (i.name.as_str(), dims)
        })
        .collect();
    let _ = plan.output_shapes(&given);
}

/// The compact-weights decoders: [`subsetq_onnx::Model::compact_weights`] (codes, table,
/// scales and shape read back and checked) and their packing for the integer kernels
/// ([`subsetq_pipeline::packed::packed_layers`], which also reads the quantization record),
/// then [`subsetq_onnx::Model::fold_constants`] (codes back to float weights; constant nodes
/// into initializers) and every initializer of the result read back.
pub fn compact_fold(data: &[u8]) {
    let Ok(model) = subsetq_onnx::decode(data) else {
        return;
    };
    if let Ok(weights) = model.compact_weights() {
        for w in &weights {
            let _ = (w.bits, w.codes.len(), w.table.len());
        }
    }
    let _ = subsetq_pipeline::packed::packed_layers(&model);
    let Ok(folded) = model.fold_constants() else {
        return;
    };
    if let Ok(g) = folded.graph() {
        for t in &g.initializer {
            let _ = subsetq_onnx::read_tensor(t, t.name());
        }
    }
    let _ = folded.weight_layers();
}

/// The preprocessing sidecar parser. A sidecar that parses and validates must write back to
/// text that parses to the same settings.
pub fn sidecar(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pre) = Preprocess::from_sidecar_str(text) else {
        return;
    };
    if pre.validate().is_err() {
        return;
    }
    let again = Preprocess::from_sidecar_str(&pre.to_sidecar_string());
    assert_eq!(again.as_ref(), Ok(&pre), "sidecar round trip");
}

/// A scratch folder for this process's input files (the loaders read paths).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("subsetq-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the fuzz scratch folder");
        d
    })
}

/// The IDX loader (raw or gzip, images with their labels file). The first two bytes
/// (little-endian) are the length of the images file; the rest is the labels file.
pub fn idx(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (images, labels) = rest.split_at(split);
    let dir = scratch();
    let images_path = dir.join("fuzz-images-idx3-ubyte");
    let labels_path = dir.join("fuzz-labels-idx1-ubyte");
    if std::fs::write(&images_path, images).is_err()
        || std::fs::write(&labels_path, labels).is_err()
    {
        return;
    }
    let gray = Preprocess::new(Color::Gray).with_num_classes(10);
    let _ = Loader::new(&gray).load(&images_path);
    let small = Preprocess::new(Color::Rgb)
        .with_resize(6)
        .with_center_crop(4, 4);
    let _ = Loader::new(&small)
        .limit(Some(3))
        .labels(LabelSource::Unlabelled)
        .load(&images_path);
}

/// The image loader: one PNG or JPEG file, decoded, resized, cropped and normalised.
pub fn image(data: &[u8]) {
    let name = if data.starts_with(&[0xff, 0xd8]) {
        "fuzz.jpg"
    } else {
        "fuzz.png"
    };
    let path = scratch().join(name);
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let pre = Preprocess::new(Color::Rgb)
        .with_resize(24)
        .with_center_crop(16, 16)
        .with_normalize(1.0 / 255.0, &[0.5], &[0.25]);
    let _ = Loader::new(&pre)
        .labels(LabelSource::Unlabelled)
        .load(&path);
    let gray = Preprocess::new(Color::Gray);
    let _ = Loader::new(&gray)
        .labels(LabelSource::Unlabelled)
        .load(&path);
    let _ = std::fs::remove_file(&path);
}
