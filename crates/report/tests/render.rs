//! The fashion-resnet report, with its accuracy curve: one panel per layer, the same bytes
//! at 1 and 2 threads, and rendered by headless Chromium into a screenshot that is not blank
//! and shows SQ's red points.

use std::path::{Path, PathBuf};
use std::process::Command;

use subsetq_data::{LabelSource, Preprocess};
use subsetq_onnx::test_assets::{require, root};
use subsetq_pipeline::data::load_data;
use subsetq_pipeline::progress::quiet;
use subsetq_pipeline::SearchOptions;
use subsetq_report::{build, CurveData};

fn report_html(threads: usize) -> (String, usize) {
    let data = require("data/fashion-mnist/t10k-images-idx3-ubyte.gz").expect("fashion-mnist");
    let path = root().join("models/fashion-resnet.onnx");
    let model = subsetq_onnx::load(&path).unwrap();
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&path)).unwrap();
    let data = load_data(&data, &pre, LabelSource::Auto, Some(100), &mut quiet).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let curve = CurveData {
            data: &data,
            pre: &pre,
            bits: vec![2, 4],
        };
        let r = build(
            &model,
            "fashion-resnet",
            &SearchOptions::new(4),
            Some(&pre),
            Some(curve),
            &mut quiet,
        )
        .unwrap();
        assert_eq!(r.curve.as_ref().map(|c| c.points.len()), Some(10));
        (r.html().unwrap(), r.layers.len())
    })
}

/// Debian's Chromium, or `None` (after saying why) outside CI.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from(name))
    });
    if found.is_none() {
        let msg = "chromium is missing (Debian: apt-get install chromium; .ci/run installs it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping the screenshot: {msg}");
    }
    found
}

fn screenshot(chromium: &Path, html: &Path, png: &Path, profile: &Path) {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_report_has_every_layer_is_deterministic_and_renders() {
    if require("data/fashion-mnist/t10k-images-idx3-ubyte.gz").is_none() {
        return;
    }
    let (html, layers) = report_html(2);
    assert_eq!(layers, 17);
    for i in 0..layers {
        let at = html
            .find(&format!("<section class=\"layer\" id=\"layer-{i}\">"))
            .unwrap_or_else(|| panic!("no panel for layer {i}"));
        assert!(html[at..].trim_start_matches(|c| c != '>').contains("<svg"));
    }
    // Two summary charts, two curves, one histogram per layer; the cost table per layer.
    assert_eq!(html.matches("<svg").count(), 4 + layers);
    assert_eq!(html.matches("<tr><td>").count(), layers);
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network"
    );
    assert_eq!(report_html(1).0, html, "1 and 2 threads differ");

    let Some(chromium) = chromium() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("subsetq-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (page, png) = (dir.join("report.html"), dir.join("report.png"));
    std::fs::write(&page, &html).unwrap();
    screenshot(&chromium, &page, &png, &dir.join("profile"));
    let img = image::open(&png).expect("a PNG").to_rgb8();
    assert_eq!(img.dimensions(), (1280, 2400));
    let pixels = img.pixels().count() as f64;
    let non_white = img
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 240))
        .count() as f64;
    // SQ's colour (214, 39, 40): its bars and points.
    let red = img
        .pixels()
        .filter(|p| p.0[0] > 180 && p.0[1] < 80 && p.0[2] < 80)
        .count();
    assert!(
        non_white / pixels > 0.05,
        "blank screenshot: {non_white} of {pixels} pixels drawn"
    );
    assert!(red > 1000, "SQ's red bars and points missing: {red} pixels");
    let _ = std::fs::remove_dir_all(&dir);
}
