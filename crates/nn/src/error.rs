//! Errors of the `nn` crate: tensor errors from the core, plus files (naming the file and
//! the byte offset) and state dicts.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op failed (shape mismatch, bad argument, ...).
    #[error(transparent)]
    Tensor(#[from] autograd::Error),
    /// The file could not be opened, read or written.
    #[error("{}: {message}", .path.display())]
    Io { path: PathBuf, message: String },
    /// The file was read but its contents are invalid.
    #[error("{}: at byte {offset}: {message}", .path.display())]
    Format { path: PathBuf, offset: u64, message: String },
    /// A file's entries do not fit what the caller needs (a state dict that does not fit the
    /// module, a checkpoint that is not a resumable run): found from the headers, before any
    /// tensor data is read.
    #[error("{}: {message}", .path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// A state dict that does not fit the module (lists every problem).
    #[error("load_state_dict: {0}")]
    StateDict(String),
    /// An invalid setting of an optimiser, scheduler or other training utility (a negative
    /// learning rate, Nesterov without momentum, ...), named, as PyTorch's `ValueError`.
    #[error("{what}: {message}")]
    Config { what: &'static str, message: String },
    /// Training stopped: a non-finite loss, or a NaN/infinity found by anomaly mode.
    #[error("{0}")]
    Diverged(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Error::Io { path: path.into(), message: e.to_string() }
    }
    pub fn config(what: &'static str, message: impl Into<String>) -> Self {
        Error::Config { what, message: message.into() }
    }
    pub fn format(path: impl Into<PathBuf>, offset: u64, message: impl Into<String>) -> Self {
        Error::Format { path: path.into(), offset, message: message.into() }
    }
}
