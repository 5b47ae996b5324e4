//! End-to-end timing of the engine on the real models, against onnxruntime
//! measured in the same run (the project's venv, 2 intra-op threads):
//!
//! - mnist-cnn on the 10k MNIST test images (batches of 500), with top-1
//!   against the labels;
//! - EfficientNet-Lite0 on the 20 foolbox ImageNet photos (preprocessed by
//!   `tests/ort_reference.py`: resize 256, center crop 224, (x−127)/128),
//!   batch 20, with top-1 against the label in each file name.
//!
//! `cargo run --release --example e2e` (assets from `scripts/fetch-assets.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use subsetq_engine::burn_tensor::Device;
use subsetq_engine::Engine;

fn root() -> PathBuf {
    let m = Path::new(env!("CARGO_MANIFEST_DIR"));
    m.ancestors().nth(2).unwrap_or(m).to_path_buf()
}

fn fail(msg: String) -> ! {
    eprintln!("e2e: {msg}");
    std::process::exit(2)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        fail(format!(
            "{}: {e} (run `bash scripts/fetch-assets.sh`)",
            path.display()
        ))
    })
}

fn idx(path: &Path, magic: usize) -> (Vec<usize>, Vec<u8>) {
    let b = read(path);
    let be = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
            .unwrap_or_else(|| fail(format!("{}: truncated IDX header", path.display())))
    };
    if be(0) != magic {
        fail(format!(
            "{}: not an IDX file of the expected kind",
            path.display()
        ));
    }
    let ndims = magic & 0xff;
    let dims: Vec<usize> = (0..ndims).map(|i| be(4 + 4 * i)).collect();
    let start = 4 + 4 * ndims;
    let n: usize = dims.iter().product();
    let data = b
        .get(start..start + n)
        .unwrap_or_else(|| fail(format!("{}: truncated data", path.display())))
        .to_vec();
    (dims, data)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

fn python(args: &[&str]) -> Option<String> {
    let py = root().join(".venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_reference.py");
    let out = Command::new(py).arg(script).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
}

fn ort_time(
    model: &Path,
    input: &Path,
    shape: &[usize],
    batch: usize,
) -> Option<(f64, Vec<usize>)> {
    let shape = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = python(&[
        "time",
        &model.display().to_string(),
        &input.display().to_string(),
        &shape,
        &batch.to_string(),
    ])?;
    let mut lines = out.lines();
    let secs = lines.next()?.trim().parse().ok()?;
    let top1 = lines
        .next()?
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    Some((secs, top1))
}

fn main() {
    let device = Device::flex();
    let assets = root().join("assets");
    let tmp = std::env::temp_dir().join(format!("subsetq-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| fail(format!("{}: {e}", tmp.display())));

    // mnist-cnn, 10k test images.
    let model = assets.join("mnist-cnn.onnx");
    let (dims, pixels) = idx(&assets.join("data/mnist/t10k-images-idx3-ubyte"), 0x803);
    let (_, labels) = idx(&assets.join("data/mnist/t10k-labels-idx1-ubyte"), 0x801);
    let (n, per) = (dims[0], dims[1] * dims[2]);
    let x: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let engine = Engine::load(&model, &device).unwrap_or_else(|e| fail(e.to_string()));
    let batch = 500;
    let t0 = Instant::now();
    let mut correct = 0;
    let mut ours = Vec::with_capacity(n);
    for (b, chunk) in x.chunks(batch * per).enumerate() {
        let m = chunk.len() / per;
        let (_, y) = engine
            .run_f32(chunk.to_vec(), &[m, 1, dims[1], dims[2]])
            .unwrap_or_else(|e| fail(e.to_string()));
        for (i, row) in y.chunks(10).enumerate() {
            let c = argmax(row);
            ours.push(c);
            correct += usize::from(c == usize::from(labels[b * batch + i]));
        }
    }
    let t_ours = t0.elapsed().as_secs_f64();
    println!(
        "mnist-cnn, {n} test images, batch {batch}: engine {t_ours:.2} s, top-1 {:.2}%",
        100.0 * correct as f64 / n as f64
    );
    let input = tmp.join("mnist.f32");
    write_f32(&input, &x);
    if let Some((t_ort, top1)) = ort_time(&model, &input, &[n, 1, dims[1], dims[2]], batch) {
        let agree = top1.iter().zip(&ours).filter(|(a, b)| a == b).count();
        println!(
            "  onnxruntime {t_ort:.2} s (engine / onnxruntime = {:.2}), top-1 agreement {agree}/{n}",
            t_ours / t_ort
        );
    }

    // EfficientNet-Lite0, 20 ImageNet photos.
    let model = assets.join("efficientnet-lite0.onnx");
    let photos = assets.join("data/foolbox");
    let input = tmp.join("effnet.f32");
    let logits = tmp.join("effnet-ort.f32");
    let Some(shape) = python(&[
        "images",
        &model.display().to_string(),
        &photos.display().to_string(),
        "imagenet_",
        "20",
        &input.display().to_string(),
        &logits.display().to_string(),
    ]) else {
        fail("preprocessing the photos needs the venv: run `bash scripts/fetch-assets.sh`".into())
    };
    let shape: Vec<usize> = shape
        .trim()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let bytes = read(&input);
    let x: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(&photos)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.starts_with("imagenet_"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let engine = Engine::load(&model, &device).unwrap_or_else(|e| fail(e.to_string()));
    let t0 = Instant::now();
    let (_, y) = engine
        .run_f32(x, &shape)
        .unwrap_or_else(|e| fail(e.to_string()));
    let t_ours = t0.elapsed().as_secs_f64();
    let ours: Vec<usize> = y.chunks(1000).map(argmax).collect();
    let correct = ours
        .iter()
        .zip(&names)
        .filter(|(c, name)| {
            name.trim_end_matches(".jpg")
                .rsplit('_')
                .next()
                .and_then(|l| l.parse().ok())
                == Some(**c)
        })
        .count();
    println!(
        "efficientnet-lite0, {} photos, batch {}: engine {t_ours:.2} s, top-1 {correct}/{}",
        shape[0], shape[0], shape[0]
    );
    if let Some((t_ort, top1)) = ort_time(&model, &input, &shape, shape[0]) {
        let agree = top1.iter().zip(&ours).filter(|(a, b)| a == b).count();
        println!(
            "  onnxruntime {t_ort:.2} s (engine / onnxruntime = {:.2}), top-1 agreement {agree}/{}",
            t_ours / t_ort,
            shape[0]
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
