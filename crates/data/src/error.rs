//! The one error type of this crate: every variant names the file and the cause.

use std::path::PathBuf;

/// `Result` with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading data. Each message starts with the file (or
/// folder) concerned, so that a caller can print it as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The path given does not exist (or a glob pattern's folder does not).
    #[error("{}: not found", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// Reading a file or listing a folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The labels file that goes with an IDX images file is not there.
    #[error("{}: labels file not found ({})", images.display(), looked_for(tried))]
    MissingLabels {
        /// The images file.
        images: PathBuf,
        /// The candidate labels files, in the order they were tried.
        tried: Vec<PathBuf>,
    },
    /// The first four bytes are not an IDX magic number of the kind expected.
    #[error("{}: bad magic {found:02x?}: expected {expected}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found (after gzip decompression, if any).
        found: [u8; 4],
        /// What was expected, in words.
        expected: &'static str,
    },
    /// The header parses but describes something unusable (zero or overflowing dimensions,
    /// more data than the file can hold).
    #[error("{}: bad header: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file ends before the data its header announces.
    #[error("{}: truncated: the header announces {expected} data bytes, the file has {actual}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Data bytes announced by the header.
        expected: u64,
        /// Data bytes present (a lower bound when the file is compressed).
        actual: u64,
    },
    /// The file has bytes after the data its header announces.
    #[error("{}: {extra} unexpected byte(s) after the {expected} data bytes the header announces", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Data bytes announced by the header.
        expected: u64,
        /// Extra bytes found (a lower bound when the file is compressed).
        extra: u64,
    },
    /// Images and labels files disagree on the number of samples.
    #[error("{} has {images_n} images but {} has {labels_n} labels", images.display(), labels.display())]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Its number of images.
        images_n: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its number of labels.
        labels_n: usize,
    },
    /// An image in a format this crate does not read (only PNG and JPEG are supported), or
    /// a kind of input that is neither an IDX file, an image nor a folder.
    #[error("{}: unsupported image: {reason}", path.display())]
    UnsupportedImage {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A PNG or JPEG file that does not decode.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// No images where some were expected (empty folder, pattern matching nothing, zero
    /// images in an IDX file).
    #[error("{}: no images found{hint}", path.display())]
    Empty {
        /// The folder, pattern or file.
        path: PathBuf,
        /// Extra explanation, starting with a separator (may be empty).
        hint: String,
    },
    /// A label that cannot be read or is out of range.
    #[error("{}: {reason}", path.display())]
    Label {
        /// The file (image, labels file or folder).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image whose size after preprocessing is not the size the model expects, or that
    /// differs from the other images' when no size is given.
    #[error("{}: {reason}", path.display())]
    Size {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A preprocessing sidecar file that cannot be used.
    #[error("{}: {reason}", path.display())]
    Sidecar {
        /// The sidecar file.
        path: PathBuf,
        /// What is wrong (unknown schema, bad or missing field, inconsistent values).
        reason: String,
    },
    /// Preprocessing settings that are inconsistent (built from flags rather than a sidecar).
    #[error("invalid preprocessing: {0}")]
    Preprocess(String),
    /// The dataset does not fit in memory.
    #[error("{}: the dataset needs {bytes} bytes of memory, which could not be allocated", path.display())]
    TooLarge {
        /// The file or folder loaded.
        path: PathBuf,
        /// Bytes requested.
        bytes: u128,
    },
}

fn looked_for(tried: &[PathBuf]) -> String {
    if tried.is_empty() {
        return "no labels file name can be derived from a name without \"images\" in it, \
                as in t10k-images-idx3-ubyte; give the labels file explicitly"
            .into();
    }
    let names: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    format!("looked for {}", names.join(", "))
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
