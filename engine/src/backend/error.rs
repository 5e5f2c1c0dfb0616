//! What a backend reports instead of panicking.
//!
//! On a GPU nearly every operation can fail: an allocation runs out of memory, a kernel launch
//! is refused, a copy hits a device that has fallen over. So every backend op that touches
//! memory or launches work returns `Result<_, BackendError>`, and the error stays structured
//! up to the binary ([`crate::error::EngineError::Backend`]), which decides how to print it.

use super::dtype::DType;

/// An error from a [`super::Backend`] operation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The op cannot compute in the tensor's dtype on this backend.
    #[error(
        "{op} on the {backend} backend: {dtype} tensors are not supported (it computes in \
         {supported}); load the model in {supported} or choose another device"
    )]
    UnsupportedDType {
        backend: &'static str,
        op: &'static str,
        dtype: DType,
        supported: DType,
    },
    /// The operands' shapes do not fit together (a bug in the caller, or a corrupt model).
    #[error("{op}: shapes do not fit: {detail}")]
    ShapeMismatch { op: &'static str, detail: String },
    /// The model, its activations and a KV cache do not fit the memory allowed; the message
    /// says what took how much and which knob to turn.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The device or its driver failed (out of memory, a refused launch, a failed copy); the
    /// driver's own error is kept as the source.
    #[error("{op} failed on the {backend} device")]
    Device {
        backend: &'static str,
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tensor-parallel collective failed: a peer rank died, hung past the timeout, or issued
    /// another call (the communicator's own message names the rank and the peer).
    #[error(transparent)]
    Collective(#[from] crate::distributed::CommError),
}

impl BackendError {
    /// A [`BackendError::ShapeMismatch`] for `op`.
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        BackendError::ShapeMismatch {
            op,
            detail: detail.into(),
        }
    }
}
