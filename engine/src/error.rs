//! One error type for the engine: every failure names the tensor, file or shape involved.

use crate::{DType, Device};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{op}: expected dtype {expected:?}, got {got:?}")]
    DType { op: &'static str, expected: DType, got: DType },

    #[error("{op}: tensors are on different devices ({a:?} and {b:?})")]
    DeviceMismatch { op: &'static str, a: Device, b: Device },

    #[error("{op}: not implemented on {device:?} yet")]
    NotOnDevice { op: &'static str, device: Device },

    #[error("index out of range: {0}")]
    Index(String),

    #[error("autograd: {0}")]
    Autograd(String),

    #[error("CUDA: {0}")]
    Cuda(String),

    #[error("out of memory: {0}")]
    OutOfMemory(String),

    #[error("{path}: {msg}")]
    File { path: String, msg: String },

    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape { op, detail: detail.into() }
    }
    pub(crate) fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::File { path: path.as_ref().display().to_string(), msg: msg.into() }
    }
}
