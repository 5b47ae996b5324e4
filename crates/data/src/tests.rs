//! Loader tests on small files written here: IDX (raw / gzip, hostile headers, missing
//! labels) and image folders (both label modes, errors).

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use super::*;

fn idx_bytes(dtype: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, dtype, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// 3 images of 2×4 with pixel (i, y, x) = 10 i + 4 y + x, labels 7, 0, 9.
fn small_idx() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3u8)
        .flat_map(|i| (0..8u8).map(move |p| 10 * i + p))
        .collect();
    (
        idx_bytes(8, &[3, 2, 4], &pixels),
        idx_bytes(8, &[3], &[7, 0, 9]),
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn mnist_pre() -> Preprocess {
    Preprocess::new(Color::Gray).with_normalize(1.0 / 255.0, &[0.0], &[1.0])
}

fn check_small(d: &Dataset) {
    assert_eq!(d.shape(), [3, 1, 2, 4]);
    assert_eq!(d.labels.as_deref(), Some(&[7, 0, 9][..]));
    assert_eq!(d.names, vec!["#0", "#1", "#2"]);
    for i in 0..3 {
        for p in 0..8 {
            let want = (10 * i + p) as f32 * (1.0f32 / 255.0);
            assert_eq!(d.image(i)[p], want, "image {i} pixel {p}");
        }
    }
}

#[test]
fn idx_round_trip_raw_gz_and_mixed() {
    let (images, labels) = small_idx();
    let pre = mnist_pre();
    for (img_gz, lab_gz) in [(false, false), (true, true), (true, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let img_name = if img_gz {
            "t10k-images-idx3-ubyte.gz"
        } else {
            "t10k-images-idx3-ubyte"
        };
        let lab_name = if lab_gz {
            "t10k-labels-idx1-ubyte.gz"
        } else {
            "t10k-labels-idx1-ubyte"
        };
        let ip = write(
            dir.path(),
            img_name,
            &if img_gz { gz(&images) } else { images.clone() },
        );
        write(
            dir.path(),
            lab_name,
            &if lab_gz { gz(&labels) } else { labels.clone() },
        );
        let d = load(&ip, &pre, None).unwrap();
        check_small(&d);
    }
}

#[test]
fn idx_gzip_is_detected_by_content_not_name() {
    let (images, labels) = small_idx();
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "t10k-images-idx3-ubyte", &gz(&images));
    write(dir.path(), "t10k-labels-idx1-ubyte.gz", &labels); // raw despite the name
    check_small(&load(&ip, &mnist_pre(), None).unwrap());
}

#[test]
fn idx_limit_rgb_and_explicit_labels() {
    let (images, labels) = small_idx();
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "pixels.idx", &images);
    let lp = write(dir.path(), "answers.idx", &labels);
    let pre = Preprocess::new(Color::Rgb);
    let d = Loader::new(&pre)
        .limit(Some(2))
        .labels(LabelSource::IdxFile(lp))
        .load(&ip)
        .unwrap();
    assert_eq!(d.shape(), [2, 3, 2, 4]);
    assert_eq!(d.labels.as_deref(), Some(&[7, 0][..]));
    // gray replicated into R, G, B planes
    assert_eq!(&d.image(1)[..8], &d.image(1)[8..16]);
    assert_eq!(d.image(1)[16 + 5], 15.0);
    let d = Loader::new(&pre)
        .labels(LabelSource::Unlabelled)
        .load(&ip)
        .unwrap();
    assert_eq!((d.n, d.labels), (3, None));
}

#[test]
fn idx_resize_and_crop_apply_too() {
    let (images, labels) = small_idx();
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "a-images-idx3-ubyte", &images);
    write(dir.path(), "a-labels-idx1-ubyte", &labels);
    let pre = Preprocess::new(Color::Gray)
        .with_resize(4)
        .with_center_crop(4, 4);
    let d = load(&ip, &pre, None).unwrap();
    assert_eq!(d.shape(), [3, 1, 4, 4]);
}

#[test]
fn idx_missing_labels_file() {
    let (images, _) = small_idx();
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "t10k-images-idx3-ubyte.gz", &gz(&images));
    let e = load(&ip, &mnist_pre(), None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::MissingLabels { .. }), "{msg}");
    assert!(
        msg.contains("looked for") && msg.contains("t10k-labels-idx1-ubyte.gz, "),
        "{msg}"
    );
    // A name from which no labels name can be derived.
    let ip = write(dir.path(), "digits.bin", &images);
    let msg = load(&ip, &mnist_pre(), None).unwrap_err().to_string();
    assert!(msg.contains("no labels file name"), "{msg}");
}

fn load_err(images: &[u8], labels: &[u8]) -> DataError {
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "x-images-idx3-ubyte", images);
    write(dir.path(), "x-labels-idx1-ubyte", labels);
    load(&ip, &mnist_pre(), None).unwrap_err()
}

#[test]
fn idx_hostile_headers() {
    let (images, labels) = small_idx();
    // Dimensions whose product overflows u64.
    let e = load_err(
        &idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]),
        &labels,
    );
    assert!(
        matches!(&e, DataError::BadHeader { reason, .. } if reason.contains("overflow")),
        "{e}"
    );
    // A header announcing far more data than the file holds: no allocation, an error.
    let e = load_err(&idx_bytes(8, &[60000, 28, 28], &[0; 100]), &labels);
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 47_040_000,
                actual: 100,
                ..
            }
        ),
        "{e}"
    );
    // The same lie in a gzip file: more than deflate can expand to.
    let e = load_err(
        &gz(&idx_bytes(8, &[1_000_000, 1000, 1000], &[0; 100])),
        &labels,
    );
    assert!(
        matches!(&e, DataError::BadHeader { reason, .. } if reason.contains("gzip file can hold")),
        "{e}"
    );
    // A plausible gzip lie: the stream ends early.
    let e = load_err(&gz(&idx_bytes(8, &[10, 28, 28], &[0; 700])), &labels);
    assert!(matches!(e, DataError::Truncated { actual: 700, .. }), "{e}");
    // A gzip stream cut in the middle.
    let packed = gz(&images);
    let e = load_err(&packed[..packed.len() - 12], &labels);
    assert!(
        matches!(e, DataError::Truncated { .. } | DataError::Io { .. }),
        "{e}"
    );
    // Trailing bytes, raw and gzip.
    let mut long = images.clone();
    long.extend_from_slice(&[0; 5]);
    let e = load_err(&long, &labels);
    assert!(
        matches!(e, DataError::TrailingBytes { extra: 5, .. }),
        "{e}"
    );
    let e = load_err(&gz(&long), &labels);
    assert!(
        matches!(e, DataError::TrailingBytes { extra: 5, .. }),
        "{e}"
    );
    // Wrong number of dimensions, wrong element type, zero dimensions, cut header.
    let e = load_err(&idx_bytes(8, &[3, 8], &[0; 24]), &labels);
    assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
    let e = load_err(&idx_bytes(0x0D, &[3, 2, 4], &[0; 96]), &labels);
    assert!(e.to_string().contains("0x0d (float)"), "{e}");
    let e = load_err(&idx_bytes(8, &[3, 0, 4], &[]), &labels);
    assert!(e.to_string().contains("zero"), "{e}");
    let e = load_err(&idx_bytes(8, &[0, 2, 4], &[]), &labels);
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    let e = load_err(&images[..9], &labels);
    assert!(e.to_string().contains("ends inside"), "{e}");
    // Labels file: wrong magic, wrong count, out-of-range label.
    let e = load_err(&images, &idx_bytes(8, &[3, 1], &[1, 2, 3]));
    assert!(
        matches!(&e, DataError::BadMagic { path, .. } if path.ends_with("x-labels-idx1-ubyte")),
        "{e}"
    );
    let e = load_err(&images, &idx_bytes(8, &[4], &[1, 2, 3, 4]));
    assert!(
        matches!(
            e,
            DataError::CountMismatch {
                images_n: 3,
                labels_n: 4,
                ..
            }
        ),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "x-images-idx3-ubyte", &images);
    write(dir.path(), "x-labels-idx1-ubyte", &labels);
    let e = load(&ip, &mnist_pre().with_num_classes(8), None).unwrap_err();
    assert!(e.to_string().contains("item #2 is 9"), "{e}");
    // Not IDX, not an image.
    let p = write(dir.path(), "notes.txt", b"hello world");
    let e = load(&p, &mnist_pre(), None).unwrap_err();
    assert!(matches!(e, DataError::UnsupportedImage { .. }), "{e}");
    // Random bytes never panic.
    let mut seed = 0x2545f491u32;
    for len in [0, 1, 3, 4, 5, 8, 12, 16, 40, 200] {
        for _ in 0..20 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if len >= 4 {
                b[..4].copy_from_slice(&[0, 0, 8, 3]);
            }
            let _ = load_err(&b, &labels);
            let _ = load_err(&gz(&b), &labels);
        }
    }
}

fn save_png(path: &Path, w: u32, h: u32, rgb: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_raw(w, h, rgb.to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

const RED: [u8; 12] = [255, 0, 0, 200, 10, 0, 255, 0, 0, 0, 0, 0];
const BLUE: [u8; 12] = [0, 0, 255, 0, 20, 250, 1, 2, 3, 4, 5, 6];

#[test]
fn folder_per_class_labels() {
    let dir = tempfile::tempdir().unwrap();
    save_png(&dir.path().join("red/a.png"), 2, 2, &RED);
    save_png(&dir.path().join("blue/b.png"), 2, 2, &BLUE);
    std::fs::write(dir.path().join("blue/README.txt"), "not an image").unwrap();
    let pre = Preprocess::new(Color::Rgb);
    for source in [LabelSource::Auto, LabelSource::SubFolder] {
        let d = Loader::new(&pre).labels(source).load(dir.path()).unwrap();
        assert_eq!(d.shape(), [2, 3, 2, 2]);
        assert_eq!(d.classes, vec!["blue", "red"]);
        assert_eq!(d.labels.as_deref(), Some(&[0, 1][..]));
        assert_eq!(d.names, vec!["blue/b.png", "red/a.png"]);
        // blue/b.png, CHW: R plane, G plane, B plane
        assert_eq!(
            d.image(0),
            &[0., 0., 1., 4., 0., 20., 2., 5., 255., 250., 3., 6.]
        );
    }
    // Normalisation and gray conversion (Pillow's L = (19595 R + 38470 G + 7471 B) >> 16).
    let pre = Preprocess::new(Color::Gray).with_normalize(1.0, &[127.0], &[128.0]);
    let d = load(dir.path(), &pre, None).unwrap();
    assert_eq!(d.shape(), [2, 1, 2, 2]);
    let l = |r: u32, g: u32, b: u32| ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as f32;
    assert_eq!(d.image(1)[1], (l(200, 10, 0) - 127.0) / 128.0);
    // Unlabelled keeps the order, drops the labels.
    let pre = Preprocess::new(Color::Rgb);
    let d = Loader::new(&pre)
        .labels(LabelSource::Unlabelled)
        .load(dir.path())
        .unwrap();
    assert_eq!((d.n, d.labels), (2, None));
}

#[test]
fn file_name_labels_pattern_and_single_file() {
    let dir = tempfile::tempdir().unwrap();
    save_png(&dir.path().join("imagenet_01_559.png"), 2, 2, &RED);
    save_png(&dir.path().join("imagenet_00_3.png"), 2, 2, &BLUE);
    let pre = Preprocess::new(Color::Rgb);
    for source in [LabelSource::Auto, LabelSource::FileName] {
        let d = Loader::new(&pre).labels(source).load(dir.path()).unwrap();
        assert_eq!(d.labels.as_deref(), Some(&[3, 559][..]));
        assert_eq!(d.names, vec!["imagenet_00_3.png", "imagenet_01_559.png"]);
        assert!(d.classes.is_empty());
    }
    let e = load(dir.path(), &pre.clone().with_num_classes(100), None).unwrap_err();
    assert!(
        matches!(&e, DataError::Label { path, .. } if path.ends_with("imagenet_01_559.png")),
        "{e}"
    );
    // Pattern and single file.
    save_png(&dir.path().join("other_5.png"), 2, 2, &RED);
    let d = load(&dir.path().join("imagenet_*.png"), &pre, None).unwrap();
    assert_eq!(d.n, 2);
    let d = load(&dir.path().join("other_5.png"), &pre, None).unwrap();
    assert_eq!((d.n, d.labels.as_deref()), (1, Some(&[5][..])));
    let e = load(&dir.path().join("nothing_*.png"), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    // A file without a label among labelled ones: an error, not a silent label.
    save_png(&dir.path().join("stray.png"), 2, 2, &RED);
    let e = load(dir.path(), &pre, None).unwrap_err();
    assert!(
        matches!(&e, DataError::Label { path, .. } if path.ends_with("stray.png")),
        "{e}"
    );
    // FileName mode on names without labels, Auto with none: unlabelled.
    let plain = tempfile::tempdir().unwrap();
    save_png(&plain.path().join("0001.png"), 2, 2, &RED);
    let d = load(plain.path(), &pre, None).unwrap();
    assert_eq!(d.labels, None);
    let e = Loader::new(&pre)
        .labels(LabelSource::FileName)
        .load(plain.path())
        .unwrap_err();
    assert!(matches!(e, DataError::Label { .. }), "{e}");
}

#[test]
fn folder_errors() {
    let pre = Preprocess::new(Color::Rgb);
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path(), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    let e = Loader::new(&pre)
        .labels(LabelSource::SubFolder)
        .load(dir.path())
        .unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    let e = load(&dir.path().join("absent"), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }), "{e}");

    // Class folders without images.
    std::fs::create_dir(dir.path().join("cat")).unwrap();
    let e = load(dir.path(), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");

    // Unsupported format by extension and by content; corrupt PNG.
    let d2 = tempfile::tempdir().unwrap();
    std::fs::write(d2.path().join("x_1.bmp"), b"BM....").unwrap();
    let e = load(d2.path(), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::UnsupportedImage { .. }), "{e}");
    let d3 = tempfile::tempdir().unwrap();
    std::fs::write(d3.path().join("x_1.png"), b"GIF89a......").unwrap();
    let e = load(d3.path(), &pre, None).unwrap_err();
    assert!(
        matches!(&e, DataError::UnsupportedImage { reason, .. } if reason.contains("Gif")),
        "{e}"
    );
    let d4 = tempfile::tempdir().unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_raw(2, 2, RED.to_vec())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(d4.path().join("x_1.png"), &png[..png.len() - 20]).unwrap();
    let e = load(d4.path(), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    std::fs::write(d4.path().join("x_1.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = load(d4.path(), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    std::fs::write(d4.path().join("x_1.png"), b"\xff\xd8\xff garbage").unwrap();
    let e = load(d4.path(), &pre, None).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");

    // Images of different sizes without a resize / crop; a crop larger than the image.
    let d5 = tempfile::tempdir().unwrap();
    save_png(&d5.path().join("a_0.png"), 2, 2, &RED);
    save_png(&d5.path().join("b_0.png"), 1, 2, &RED[..6]);
    let e = load(d5.path(), &pre, None).unwrap_err();
    assert!(
        matches!(&e, DataError::Size { path, .. } if path.ends_with("b_0.png")),
        "{e}"
    );
    assert!(e.to_string().contains("before it are 2x2"), "{e}");
    let e = load(d5.path(), &pre.clone().with_center_crop(3, 3), None).unwrap_err();
    assert!(e.to_string().contains("smaller than the 3x3 crop"), "{e}");
    let e = load(d5.path(), &pre.clone().with_size(2, 2), None).unwrap_err();
    assert!(
        matches!(&e, DataError::Size { path, .. } if path.ends_with("b_0.png")),
        "{e}"
    );
    // ... and the same folder with a resize + crop: both come out 2x2.
    let d = load(
        d5.path(),
        &pre.clone().with_resize(2).with_center_crop(2, 2),
        None,
    )
    .unwrap();
    assert_eq!(d.shape(), [2, 3, 2, 2]);

    // An image outside the class folders when labels come from folders.
    let d6 = tempfile::tempdir().unwrap();
    save_png(&d6.path().join("cat/a.png"), 2, 2, &RED);
    save_png(&d6.path().join("b.png"), 2, 2, &RED);
    let e = Loader::new(&pre)
        .labels(LabelSource::SubFolder)
        .load(d6.path())
        .unwrap_err();
    assert!(matches!(e, DataError::Label { .. }), "{e}");

    // Invalid preprocessing is reported before any file is read.
    let bad = Preprocess::new(Color::Rgb).with_normalize(1.0, &[0.0], &[0.0]);
    let e = load(d6.path(), &bad, None).unwrap_err();
    assert!(matches!(e, DataError::Preprocess(_)), "{e}");
}

#[test]
fn resize_crop_pipeline_on_a_png() {
    // 6 wide x 4 high -> shorter side 2 -> 3x2 -> center crop 2x2 (left offset 0).
    let dir = tempfile::tempdir().unwrap();
    let rgb: Vec<u8> = (0..72).map(|v| (v * 3) as u8).collect();
    save_png(&dir.path().join("p_1.png"), 6, 4, &rgb);
    let pre = Preprocess::new(Color::Rgb)
        .with_resize(2)
        .with_center_crop(2, 2);
    let d = load(dir.path(), &pre, None).unwrap();
    assert_eq!(d.shape(), [1, 3, 2, 2]);
    let pre = Preprocess::new(Color::Rgb).with_resize(2);
    let d = load(dir.path(), &pre, None).unwrap();
    assert_eq!(d.shape(), [1, 3, 2, 3]);
}

#[test]
fn batches_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        save_png(&dir.path().join(format!("img_{i}.png")), 2, 2, &RED);
    }
    let pre = Preprocess::new(Color::Rgb);
    let mut seen = Vec::new();
    let d = Loader::new(&pre)
        .on_progress(|p| seen.push(p))
        .load(dir.path())
        .unwrap();
    assert_eq!(seen.last(), Some(&Progress { done: 5, total: 5 }));
    assert!(seen.windows(2).all(|w| w[0].done < w[1].done));
    let b: Vec<Batch<'_>> = d.batches(2).collect();
    assert_eq!(b.iter().map(|b| b.n).collect::<Vec<_>>(), vec![2, 2, 1]);
    assert_eq!(b[2].start, 4);
    assert_eq!(b[2].images.len(), 12);
    assert_eq!(b[1].labels, Some(&[2, 3][..]));
    assert_eq!(d.batches(0).count(), 5);
    let d = Loader::new(&pre).limit(Some(3)).load(dir.path()).unwrap();
    assert_eq!(d.labels.as_deref(), Some(&[0, 1, 2][..]));

    // IDX progress comes in chunks too.
    let (images, labels) = small_idx();
    let ip = write(dir.path(), "t-images-idx3-ubyte", &images);
    write(dir.path(), "t-labels-idx1-ubyte", &labels);
    let mut last = None;
    Loader::new(&mnist_pre())
        .on_progress(|p| last = Some(p))
        .load(&ip)
        .unwrap();
    assert_eq!(last, Some(Progress { done: 3, total: 3 }));
}
