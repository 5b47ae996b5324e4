//! Errors of the pipeline: the libraries' own errors, each with what it was about.

use std::path::PathBuf;

use subsetq_data::DataError;
use subsetq_engine::EngineError;
use subsetq_onnx::OnnxError;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, PipelineError>;

/// Errors from running the pipeline. `Display` gives the outermost fact; the causes follow
/// through [`std::error::Error::source`] (the CLI prints the chain on one line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The quantization math refused the input (bits, universal set, NaN weights, …).
    #[error(transparent)]
    Core(#[from] subsetq_core::Error),
    /// Reading, changing or writing the ONNX model failed.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// Planning or running the model failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Loading images or preprocessing settings failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The options or the input do not allow the work asked for.
    #[error("{0}")]
    Invalid(String),
    /// Something went wrong in a named part of the work (a model, a layer, a stage).
    #[error("{what}")]
    Context {
        /// What was being worked on, e.g. `layer conv1.weight (node Conv_0)`.
        what: String,
        /// What went wrong there.
        #[source]
        source: Box<PipelineError>,
    },
}

impl PipelineError {
    /// An error for options or input that do not allow the work.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// True when the root cause is a file that does not exist (the Python package raises
    /// `FileNotFoundError` for it).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Context { source, .. } => source.is_not_found(),
            Self::Data(DataError::NotFound { .. }) => true,
            Self::Onnx(OnnxError::Io { source, .. })
            | Self::Engine(EngineError::Onnx(OnnxError::Io { source, .. })) => {
                source.kind() == std::io::ErrorKind::NotFound
            }
            _ => false,
        }
    }

    /// The error and its causes on one line, leaving out a cause its parent already quotes
    /// (the CLI's and the Python package's message).
    pub fn one_line(&self) -> String {
        one_line(self)
    }
}

/// `err` and its causes on one line, leaving out a cause its parent already quotes.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

/// Adds what was being worked on to an error, like `anyhow`'s `with_context`, but typed.
pub trait Context<T> {
    /// Wraps the error in [`PipelineError::Context`] with `what()`.
    fn context_with(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context_with(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            what: what(),
            source: Box::new(e.into()),
        })
    }
}
