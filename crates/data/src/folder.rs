//! Image folders: listing (sorted, deterministic), labels from a sub-folder or the file
//! name, and PNG / JPEG decoding into 8-bit L or RGB.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};

use crate::error::{DataError, Result};
use crate::pixels::Image8;
use crate::LabelSource;

/// Extensions read as images.
const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg"];
/// Extensions of image formats this crate does not read: an error rather than a silent skip.
const OTHER_IMAGE_EXTS: &[&str] = &[
    "bmp", "gif", "webp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm", "tga", "ico", "avif", "heic",
    "heif", "jxl", "exr", "hdr", "qoi",
];
/// How deep class sub-folders are searched for images (guards against link loops).
const MAX_DEPTH: usize = 16;

/// The images of a folder (or pattern), in load order, with their labels.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub files: Vec<PathBuf>,
    pub names: Vec<String>,
    pub labels: Option<Vec<u32>>,
    pub classes: Vec<String>,
}

enum Kind {
    Image,
    OtherImage,
    Other,
}

fn kind(path: &Path) -> Kind {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    if IMAGE_EXTS.contains(&ext.as_str()) {
        Kind::Image
    } else if OTHER_IMAGE_EXTS.contains(&ext.as_str()) {
        Kind::OtherImage
    } else {
        Kind::Other
    }
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// The label in a foolbox-style name `prefix_..._LABEL.ext`: the digits after the last `_`
/// of the stem (a prefix before it is required, so `0001.png` carries no label).
pub(crate) fn label_from_name(path: &Path) -> Option<u32> {
    let stem = path.file_stem()?.to_str()?;
    let (prefix, digits) = stem.rsplit_once('_')?;
    if prefix.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Entries of one folder, sorted by name, split into sub-folders and image files. A file
/// of an unsupported image format is an error; other files and hidden entries are skipped.
fn read_folder(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let io = |e| DataError::io(dir, e);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort();
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for p in entries {
        if p.file_name().is_none_or(hidden) {
            continue;
        }
        // Follows links; a dangling link is skipped like any non-image.
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            dirs.push(p);
        } else if meta.is_file() {
            match kind(&p) {
                Kind::Image => files.push(p),
                Kind::OtherImage => return Err(unsupported_ext(&p)),
                Kind::Other => {}
            }
        }
    }
    Ok((dirs, files))
}

fn unsupported_ext(p: &Path) -> DataError {
    DataError::UnsupportedImage {
        path: p.into(),
        reason: "only PNG and JPEG images are supported".into(),
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(DataError::Label {
            path: dir.into(),
            reason: format!("folders nested deeper than {MAX_DEPTH} levels (a link loop?)"),
        });
    }
    let (dirs, files) = read_folder(dir)?;
    // Files of a folder, then its sub-folders, each sorted: the whole walk is sorted by
    // path components.
    let mut all: Vec<(PathBuf, bool)> = files.into_iter().map(|f| (f, false)).collect();
    all.extend(dirs.into_iter().map(|d| (d, true)));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, is_dir) in all {
        if is_dir {
            walk(&p, depth + 1, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn relative_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Simple wildcard match: `*` any run of characters, `?` one character.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the last component of `path` is a wildcard pattern.
pub(crate) fn is_pattern(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(['*', '?']))
}

/// List the images at `path` — a folder, a single image file, or `folder/pattern` with
/// `*` / `?` wildcards in the file name — with labels as `source` says.
pub(crate) fn list(path: &Path, source: &LabelSource) -> Result<Listing> {
    let (root, flat, dirs) = if is_pattern(path) {
        let root = path.parent().filter(|p| !p.as_os_str().is_empty());
        let root = root.unwrap_or(Path::new(".")).to_path_buf();
        if !root.is_dir() {
            return Err(DataError::NotFound { path: root });
        }
        let pattern = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (_, files) = read_folder(&root)?;
        let files: Vec<PathBuf> = files
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| glob_match(pattern, n))
            })
            .collect();
        if files.is_empty() {
            return Err(DataError::Empty {
                path: path.into(),
                hint: ": no PNG or JPEG file matches the pattern".into(),
            });
        }
        (root, files, Vec::new())
    } else if path.is_dir() {
        let (dirs, files) = read_folder(path)?;
        (path.to_path_buf(), files, dirs)
    } else if path.is_file() {
        match kind(path) {
            Kind::OtherImage => return Err(unsupported_ext(path)),
            _ => {
                let root = path.parent().unwrap_or(Path::new("")).to_path_buf();
                (root, vec![path.to_path_buf()], Vec::new())
            }
        }
    } else {
        return Err(DataError::NotFound { path: path.into() });
    };

    let use_folders = match source {
        LabelSource::SubFolder => true,
        LabelSource::FileName => false,
        LabelSource::Auto | LabelSource::Unlabelled | LabelSource::IdxFile(_) => {
            flat.is_empty() && !dirs.is_empty()
        }
    };

    if use_folders {
        if !flat.is_empty() {
            return Err(DataError::Label {
                path: flat[0].clone(),
                reason: "image outside the class sub-folders (labels come from one sub-folder \
                         per class)"
                    .into(),
            });
        }
        if dirs.is_empty() {
            return Err(DataError::Empty {
                path: root,
                hint: ": labels come from sub-folders, one per class, and there are none".into(),
            });
        }
        let classes: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (class, dir) in dirs.iter().enumerate() {
            let before = files.len();
            walk(dir, 1, &mut files)?;
            labels.resize(labels.len() + files.len() - before, class as u32);
        }
        if files.is_empty() {
            return Err(DataError::Empty {
                path: root,
                hint: format!(
                    ": none of the {} class sub-folders holds a PNG or JPEG file",
                    dirs.len()
                ),
            });
        }
        let names = files.iter().map(|f| relative_name(&root, f)).collect();
        let labels = (!matches!(source, LabelSource::Unlabelled)).then_some(labels);
        return Ok(Listing {
            files,
            names,
            labels,
            classes,
        });
    }

    if flat.is_empty() {
        return Err(DataError::Empty {
            path: root,
            hint: ": expected PNG or JPEG files, or one sub-folder of them per class".into(),
        });
    }
    let names: Vec<String> = flat.iter().map(|f| relative_name(&root, f)).collect();
    let parsed: Vec<Option<u32>> = flat.iter().map(|f| label_from_name(f)).collect();
    let labels = match source {
        LabelSource::Unlabelled => None,
        LabelSource::FileName => Some(all_labels(&flat, &parsed)?),
        _ => {
            if parsed.iter().all(Option::is_none) {
                None
            } else {
                Some(all_labels(&flat, &parsed)?)
            }
        }
    };
    Ok(Listing {
        files: flat,
        names,
        labels,
        classes: Vec::new(),
    })
}

fn all_labels(files: &[PathBuf], parsed: &[Option<u32>]) -> Result<Vec<u32>> {
    files
        .iter()
        .zip(parsed)
        .map(|(f, l)| {
            l.ok_or_else(|| DataError::Label {
                path: f.clone(),
                reason: "no label in the file name (expected NAME_LABEL.png or \
                         NAME_LABEL.jpg, e.g. imagenet_07_559.jpg)"
                    .into(),
            })
        })
        .collect()
}

/// Largest decoded image (bytes at 4 per pixel) a PNG or JPEG may declare: 64 Mpixel. Lower
/// under the fuzzer, whose inputs must stay within its time limit.
#[cfg(not(fuzzing))]
const MAX_DECODED_BYTES: u64 = 1 << 28;
#[cfg(fuzzing)]
const MAX_DECODED_BYTES: u64 = 1 << 22;

/// Refuses a PNG whose palette (`PLTE`) is not 1 to 256 RGB triples: the `png` decoder
/// (0.18) indexes past the end of such a palette and panics (found by the image fuzz target).
/// Walks the chunks up to the first `IDAT`; a truncated file is left to the decoder.
fn check_png_palette(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut pos = 8usize;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match &header[4..8] {
            b"PLTE" if len == 0 || len % 3 != 0 || len > 3 * 256 => {
                return Err(format!(
                    "its PNG palette has {len} bytes, not 1 to 256 RGB entries of 3 bytes"
                ))
            }
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        match pos.checked_add(12).and_then(|p| p.checked_add(len)) {
            Some(next) => pos = next,
            None => break,
        }
    }
    Ok(())
}

/// Decode a PNG or JPEG file into 8-bit gray (1 channel, for gray images) or RGB (3
/// channels, for everything else); alpha is dropped, as Pillow's `convert` does.
pub(crate) fn decode(path: &Path) -> Result<Image8> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let format = match image::guess_format(&bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Ok(other) => {
            return Err(DataError::UnsupportedImage {
                path: path.into(),
                reason: format!("{other:?} content; only PNG and JPEG are supported"),
            })
        }
        Err(_) => {
            return Err(DataError::UnsupportedImage {
                path: path.into(),
                reason: "the content is not PNG or JPEG".into(),
            })
        }
    };
    if format == ImageFormat::Png {
        check_png_palette(&bytes).map_err(|reason| DataError::UnsupportedImage {
            path: path.into(),
            reason,
        })?;
    }
    // A few hundred bytes can declare a 12288×12288 picture that decodes for seconds into
    // gigabytes: the declared size is checked before decoding (the header alone is read).
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    if let Ok((w, h)) = reader().into_dimensions() {
        let decoded = u64::from(w) * u64::from(h) * 4;
        if decoded > MAX_DECODED_BYTES {
            return Err(DataError::UnsupportedImage {
                path: path.into(),
                reason: format!(
                    "it declares {w}×{h} pixels ({} MiB decoded, more than the {} MiB allowed)",
                    decoded >> 20,
                    MAX_DECODED_BYTES >> 20
                ),
            });
        }
    }
    // The decoders are not expected to panic; if one does on a hostile file, report it.
    let decoded = decode_catching_panics(|| {
        let mut r = reader();
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODED_BYTES);
        r.limits(limits);
        r.decode()
    });
    let img = match decoded {
        Ok(Ok(img)) => img,
        Ok(Err(e)) => {
            return Err(DataError::Decode {
                path: path.into(),
                reason: e.to_string(),
            })
        }
        Err(_) => {
            return Err(DataError::Decode {
                path: path.into(),
                reason: "its decoder crashed (a panic in the decoding library)".into(),
            })
        }
    };
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (channels, data) = match img {
        DynamicImage::ImageLuma8(g) => (1, g.into_raw()),
        DynamicImage::ImageRgb8(c) => (3, c.into_raw()),
        other if !other.color().has_color() => (1, other.into_luma8().into_raw()),
        other => (3, other.into_rgb8().into_raw()),
    };
    Ok(Image8 {
        width,
        height,
        channels,
        data,
    })
}

thread_local! {
    /// Set while this thread runs a decoder under [`decode_catching_panics`].
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `decode`, turning a panic into `Err`. A caught decoder panic is reported as an error
/// by the caller, so the panic hook must not also print it (with a backtrace) or, under
/// libFuzzer, abort: the first call wraps the process's hook in one that stays quiet while this
/// thread is decoding and defers to the previous hook everywhere else.
fn decode_catching_panics<T>(decode: impl FnOnce() -> T) -> std::thread::Result<T> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(|d| d.get()) {
                previous(info);
            }
        }));
    });
    DECODING.with(|d| d.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    DECODING.with(|d| d.set(false));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_names() {
        assert_eq!(label_from_name(Path::new("imagenet_07_559.jpg")), Some(559));
        assert_eq!(label_from_name(Path::new("d/cifar10_09_1.png")), Some(1));
        assert_eq!(label_from_name(Path::new("0001.png")), None);
        assert_eq!(label_from_name(Path::new("_5.png")), None);
        assert_eq!(label_from_name(Path::new("cat_+5.png")), None);
        assert_eq!(label_from_name(Path::new("cat_.png")), None);
        assert_eq!(label_from_name(Path::new("cat_99999999999.png")), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("imagenet_*.jpg", "imagenet_07_559.jpg"));
        assert!(!glob_match("imagenet_*.jpg", "cifar10_07_5.png"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*_*_5.png", "x_1_5.png"));
        assert!(!glob_match("*_*_5.png", "x_1_6.png"));
    }
}
