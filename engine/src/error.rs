//! The engine's error type: every way user input can be wrong, each with a message that names
//! the problem and, where there is one, the fix.

/// Errors the engine reports instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("bad model config: {0}")]
    Config(String),
    #[error("bad model weights: {0}")]
    Weights(String),
    #[error("bad tokenizer: {0}")]
    Tokenizer(String),
    #[error("bad chat template: {0}")]
    ChatTemplate(String),
    #[error("invalid sampling parameters: {0}")]
    Sampling(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Io(String),
    /// The compute backend failed (kept whole, so the binary can tell a dtype it does not
    /// support from a device that ran out of memory).
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("internal error (a bug, please report it): {0}")]
    Internal(String),
}

/// Result with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
