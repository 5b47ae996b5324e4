//! Labelled evaluation and calibration data for subsetq, as `f32` NCHW batches.
//!
//! No tensor framework: a [`Dataset`] is one `Vec<f32>` of `n × channels × height × width`
//! values plus optional `u32` labels, cut into [`Batch`]es by [`Dataset::batches`].
//!
//! Two kinds of input, told apart by content (magic bytes), not by name:
//!
//! - **IDX files** (MNIST, Fashion-MNIST), raw or gzip: `t10k-images-idx3-ubyte[.gz]`, with
//!   the labels found beside it by the standard name (`t10k-labels-idx1-ubyte`, with either
//!   compression). Headers are checked against the file's length before anything is
//!   allocated, and the image and label counts must agree.
//! - **Image folders** of PNG / JPEG files, in sorted path order, with labels from one
//!   sub-folder per class (sorted class names → 0, 1, …) or from the file name in foolbox
//!   style (`imagenet_07_559.jpg` → 559): see [`LabelSource`]. A single image file, or a
//!   folder with a wildcard file name (`photos/imagenet_*.jpg`), works too.
//!
//! [`Preprocess`] says how pixels become model input: colour (gray or RGB), shorter-side
//! resize, center crop, then `(pixel × scale − mean[c]) / std[c]`. It is read from the
//! `<model>.preprocess.json` sidecar that the asset script writes
//! ([`Preprocess::from_sidecar`]) or built from flags. The resize is the `image` crate's
//! triangle filter, which like Pillow's `Image.resize(..., BILINEAR)` widens with the shrink
//! factor: tensors are within a level or two of the project's Python (Pillow) checks, the
//! rest coming from the JPEG decoder.
//!
//! Decoding images is slow: [`Loader::on_progress`] reports progress so that a caller
//! can draw a progress bar. Images are decoded in parallel (rayon); the callback is always
//! called on the caller's thread.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use subsetq_data::{load, LabelSource, Loader, Preprocess};
//!
//! // MNIST test set with the model's own preprocessing.
//! let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(Path::new("assets/mnist-cnn.onnx")))?;
//! let mnist = load(Path::new("assets/data/mnist/t10k-images-idx3-ubyte"), &pre, None)?;
//! assert_eq!((mnist.n, mnist.channels, mnist.height, mnist.width), (10000, 1, 28, 28));
//! for batch in mnist.batches(256) {
//!     let x: &[f32] = batch.images; // batch.n × 1 × 28 × 28
//!     let y: &[u32] = batch.labels.expect("MNIST has labels");
//!     assert_eq!(x.len(), batch.n * 28 * 28);
//!     assert_eq!(y.len(), batch.n);
//! }
//!
//! // Photos, labels from the file names, with progress.
//! let pre = Preprocess::from_sidecar(Path::new("assets/efficientnet-lite0.preprocess.json"))?;
//! let photos = Loader::new(&pre)
//!     .labels(LabelSource::FileName)
//!     .on_progress(|p| eprint!("\r{}/{}", p.done, p.total))
//!     .load(Path::new("assets/data/foolbox/imagenet_*.jpg"))?;
//! assert_eq!(photos.shape(), [20, 3, 224, 224]);
//! # Ok::<(), subsetq_data::DataError>(())
//! ```
#![deny(missing_docs)]

mod error;
mod folder;
mod idx;
mod pixels;
mod preprocess;
mod task;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use error::{DataError, Result};
pub use preprocess::{Color, Preprocess, Resize, SIDECAR_SCHEMA};
pub use task::{Decoder, Task};

use pixels::{Image8, MAX_RESIZED_BYTES};

/// A whole dataset in memory: images as `f32` NCHW, optional labels, one name per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `n × channels × height × width` values, NCHW.
    pub images: Vec<f32>,
    /// One label per image, when the source has labels.
    pub labels: Option<Vec<u32>>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Per image: its path relative to the folder (`class/file.jpg`, `file.jpg`), or
    /// `#index` for IDX files.
    pub names: Vec<String>,
    /// Class names (sorted sub-folder names) when labels come from sub-folders; label `i`
    /// is `classes[i]`. Empty otherwise.
    pub classes: Vec<String>,
}

/// A run of consecutive images of a [`Dataset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch<'a> {
    /// `n × channels × height × width` values, NCHW.
    pub images: &'a [f32],
    /// The images' labels, when the dataset has labels.
    pub labels: Option<&'a [u32]>,
    /// Number of images in this batch (the last batch may be short).
    pub n: usize,
    /// Index of the batch's first image in the dataset.
    pub start: usize,
}

impl Dataset {
    /// `[n, channels, height, width]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.n, self.channels, self.height, self.width]
    }

    /// Values per image: `channels × height × width`.
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i` as `channels × height × width` values (CHW).
    ///
    /// # Panics
    /// When `i >= n`.
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.sample_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// Consecutive batches of `batch` images (at least 1), the last one possibly shorter.
    pub fn batches(&self, batch: usize) -> impl Iterator<Item = Batch<'_>> {
        let batch = batch.max(1);
        let len = self.sample_len();
        (0..self.n).step_by(batch).map(move |start| {
            let n = batch.min(self.n - start);
            Batch {
                images: &self.images[start * len..(start + n) * len],
                labels: self.labels.as_deref().map(|l| &l[start..start + n]),
                n,
                start,
            }
        })
    }
}

/// Where labels come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LabelSource {
    /// IDX: the labels file beside the images file (required). Folders: one sub-folder
    /// per class when the folder holds only sub-folders; otherwise from the file names when
    /// they carry labels (all of them must), or no labels when none does.
    #[default]
    Auto,
    /// Folders: one sub-folder per class, classes sorted by name → 0, 1, ….
    SubFolder,
    /// Folders: the number after the last `_` of the file name (`imagenet_07_559.jpg` →
    /// 559); a file without one is an error.
    FileName,
    /// IDX: this labels file instead of the one found by name.
    IdxFile(PathBuf),
    /// No labels (calibration data).
    Unlabelled,
}

/// Progress of a load: `done` of `total` images processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Images processed so far.
    pub done: usize,
    /// Images to process in all.
    pub total: usize,
}

/// Load `path` (IDX file, image folder, image file or `folder/pattern*`) with the given
/// preprocessing, keeping at most `limit` images (the first ones in load order), labels
/// found automatically ([`LabelSource::Auto`]).
pub fn load(path: &Path, pre: &Preprocess, limit: Option<usize>) -> Result<Dataset> {
    Loader::new(pre).limit(limit).load(path)
}

/// A load with options: limit, label source, progress callback.
pub struct Loader<'a> {
    pre: &'a Preprocess,
    limit: Option<usize>,
    labels: LabelSource,
    progress: Option<Box<dyn FnMut(Progress) + 'a>>,
}

impl<'a> Loader<'a> {
    /// Defaults: no limit, [`LabelSource::Auto`], no progress callback.
    pub fn new(pre: &'a Preprocess) -> Self {
        Loader {
            pre,
            limit: None,
            labels: LabelSource::Auto,
            progress: None,
        }
    }

    /// Keep at most `limit` images (the first ones in load order).
    pub fn limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    /// Where labels come from.
    pub fn labels(mut self, labels: LabelSource) -> Self {
        self.labels = labels;
        self
    }

    /// Called on the caller's thread as images are processed (in chunks), ending with
    /// `done == total`.
    pub fn on_progress(mut self, f: impl FnMut(Progress) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    fn report(&mut self, done: usize, total: usize) {
        if let Some(f) = self.progress.as_mut() {
            f(Progress { done, total });
        }
    }

    /// Load `path`: an IDX file (raw or gzip), a folder of PNG / JPEG images, one image,
    /// or `folder/pattern` with `*` / `?` in the file name.
    pub fn load(self, path: &Path) -> Result<Dataset> {
        self.pre.validate()?;
        if !folder::is_pattern(path) {
            if !path.exists() {
                return Err(DataError::NotFound { path: path.into() });
            }
            if path.is_file() && idx::sniff(path)? {
                return self.load_idx(path);
            }
        }
        if let LabelSource::IdxFile(labels) = &self.labels {
            return Err(DataError::Label {
                path: labels.clone(),
                reason: format!(
                    "an IDX labels file was given but {} is not an IDX images file",
                    path.display()
                ),
            });
        }
        self.load_images(path)
    }

    fn load_idx(mut self, path: &Path) -> Result<Dataset> {
        let labels_path = match &self.labels {
            LabelSource::Unlabelled => None,
            LabelSource::IdxFile(p) => Some(p.clone()),
            LabelSource::Auto => {
                let tried = idx::labels_candidates(path);
                match tried.iter().find(|p| p.is_file()) {
                    Some(p) => Some(p.clone()),
                    None => {
                        return Err(DataError::MissingLabels {
                            images: path.into(),
                            tried,
                        })
                    }
                }
            }
            LabelSource::SubFolder | LabelSource::FileName => {
                return Err(DataError::Label {
                    path: path.into(),
                    reason: "labels from sub-folders or file names need an image folder; \
                             this is an IDX file"
                        .into(),
                })
            }
        };
        let images = idx::read(
            path,
            3,
            "00 00 08 03 (IDX images: unsigned bytes, 3 dimensions)",
            self.limit,
        )?;
        let (n, h, w) = (images.items, images.dims[1], images.dims[2]);
        let labels = match labels_path {
            None => None,
            Some(lp) => {
                let l = idx::read(
                    &lp,
                    1,
                    "00 00 08 01 (IDX labels: unsigned bytes, 1 dimension)",
                    self.limit,
                )?;
                if l.dims[0] != images.dims[0] {
                    return Err(DataError::CountMismatch {
                        images: path.into(),
                        images_n: images.dims[0],
                        labels: lp,
                        labels_n: l.dims[0],
                    });
                }
                let labels: Vec<u32> = l.data.iter().map(|&v| v as u32).collect();
                check_labels(&labels, self.pre.num_classes, |i| {
                    (lp.clone(), format!("label of item #{i}"))
                })?;
                Some(labels)
            }
        };

        let total = n;
        let mut asm = Assembler::new(self.pre, path, n);
        let plane = h * w;
        const CHUNK: usize = 1000;
        for start in (0..n).step_by(CHUNK) {
            let end = (start + CHUNK).min(n);
            for i in start..end {
                let img = Image8 {
                    width: w,
                    height: h,
                    channels: 1,
                    data: images.data[i * plane..(i + 1) * plane].to_vec(),
                };
                let img = pixels_prepare(img, self.pre).map_err(|reason| DataError::Size {
                    path: path.into(),
                    reason: format!("image #{i}: {reason}"),
                })?;
                asm.push(&img, path, Some(i))?;
            }
            self.report(end, total);
        }
        Ok(asm.finish(
            labels,
            (0..n).map(|i| format!("#{i}")).collect(),
            Vec::new(),
        ))
    }

    fn load_images(mut self, path: &Path) -> Result<Dataset> {
        let mut listing = folder::list(path, &self.labels)?;
        if let Some(limit) = self.limit {
            listing.files.truncate(limit);
            listing.names.truncate(limit);
            if let Some(l) = listing.labels.as_mut() {
                l.truncate(limit);
            }
        }
        if let Some(labels) = &listing.labels {
            let files = &listing.files;
            check_labels(labels, self.pre.num_classes, |i| {
                (files[i].clone(), "label".to_string())
            })?;
        }
        let total = listing.files.len();
        let pre = self.pre;
        let mut asm = Assembler::new(pre, path, total);
        let chunk = (rayon::current_num_threads() * 4).max(8);
        for (ci, files) in listing.files.chunks(chunk).enumerate() {
            let prepared: Vec<Result<Image8>> = files
                .par_iter()
                .map(|f| {
                    let img = folder::decode(f)?;
                    pixels_prepare(img, pre).map_err(|reason| DataError::Size {
                        path: f.clone(),
                        reason,
                    })
                })
                .collect();
            for (img, f) in prepared.into_iter().zip(files) {
                asm.push(&img?, f, None)?;
            }
            self.report((ci * chunk + files.len()).min(total), total);
        }
        Ok(asm.finish(listing.labels, listing.names, listing.classes))
    }
}

/// Labels at or above `num_classes` are an error naming where they came from.
fn check_labels(
    labels: &[u32],
    num_classes: Option<usize>,
    origin: impl Fn(usize) -> (PathBuf, String),
) -> Result<()> {
    let Some(k) = num_classes else {
        return Ok(());
    };
    if let Some(i) = labels.iter().position(|&l| l as usize >= k) {
        let (path, what) = origin(i);
        return Err(DataError::Label {
            path,
            reason: format!(
                "{what} is {}, out of range for a model with {k} classes",
                labels[i]
            ),
        });
    }
    Ok(())
}

/// Colour conversion, resize, crop and size check of one decoded image; the error is the
/// reason (the caller adds the file).
fn pixels_prepare(img: Image8, pre: &Preprocess) -> std::result::Result<Image8, String> {
    let mut img = img.into_color(pre.color);
    let original = (img.height, img.width);
    if let Some(r) = pre.resize {
        let (nw, nh) = pixels::shorter_side_size(img.width, img.height, r.shorter_side);
        if nw.saturating_mul(nh).saturating_mul(img.channels) > MAX_RESIZED_BYTES {
            return Err(format!(
                "image is {}x{} (HxW); resizing its shorter side to {} would make it {nh}x{nw}, \
                 too large",
                img.height, img.width, r.shorter_side
            ));
        }
        img = pixels::resize_bilinear(&img, nw, nh, r.antialias);
    }
    if let Some([ch, cw]) = pre.crop {
        if ch > img.height || cw > img.width {
            return Err(format!(
                "image is {}x{} (HxW){}, smaller than the {ch}x{cw} crop",
                img.height,
                img.width,
                if pre.resize.is_some() {
                    " after the resize"
                } else {
                    ""
                }
            ));
        }
        img = img.crop((img.height - ch) / 2, (img.width - cw) / 2, ch, cw);
    }
    if let Some([h, w]) = pre.size {
        if (img.height, img.width) != (h, w) {
            return Err(format!(
                "image is {}x{} (HxW) after preprocessing (originally {}x{}), the model takes \
                 {h}x{w}: set a resize or crop",
                img.height, img.width, original.0, original.1
            ));
        }
    }
    Ok(img)
}

/// Appends prepared images as CHW floats, checking that they all have the same size.
struct Assembler<'p> {
    table: Vec<[f32; 256]>,
    pre: &'p Preprocess,
    path: PathBuf,
    expected: usize,
    size: Option<(usize, usize)>,
    images: Vec<f32>,
    n: usize,
}

impl<'p> Assembler<'p> {
    fn new(pre: &'p Preprocess, path: &Path, expected: usize) -> Self {
        Assembler {
            table: pixels::normalize_table(pre),
            pre,
            path: path.into(),
            expected,
            size: None,
            images: Vec::new(),
            n: 0,
        }
    }

    /// `path` and `item` (the index inside an IDX file) name the image in errors.
    fn push(&mut self, img: &Image8, path: &Path, item: Option<usize>) -> Result<()> {
        let hw = (img.height, img.width);
        let c = self.pre.channels();
        match self.size {
            None => {
                self.size = Some(hw);
                let values = self.expected as u128 * (c * hw.0 * hw.1) as u128;
                let too_large = || DataError::TooLarge {
                    path: self.path.clone(),
                    bytes: values * 4,
                };
                let values = usize::try_from(values).map_err(|_| too_large())?;
                self.images
                    .try_reserve_exact(values)
                    .map_err(|_| too_large())?;
            }
            Some(s) if s != hw => {
                return Err(DataError::Size {
                    path: path.into(),
                    reason: format!(
                        "{}{}x{} (HxW) after preprocessing but the images before it are \
                         {}x{}: set a resize, crop or size",
                        item.map_or("image is ".to_string(), |i| format!("image #{i} is ")),
                        hw.0,
                        hw.1,
                        s.0,
                        s.1
                    ),
                });
            }
            Some(_) => {}
        }
        let start = self.images.len();
        self.images.resize(start + c * hw.0 * hw.1, 0.0);
        pixels::write_chw(img, &self.table, &mut self.images[start..]);
        self.n += 1;
        Ok(())
    }

    fn finish(self, labels: Option<Vec<u32>>, names: Vec<String>, classes: Vec<String>) -> Dataset {
        let (height, width) = self.size.unwrap_or((0, 0));
        Dataset {
            images: self.images,
            labels,
            n: self.n,
            channels: self.pre.channels(),
            height,
            width,
            names,
            classes,
        }
    }
}
