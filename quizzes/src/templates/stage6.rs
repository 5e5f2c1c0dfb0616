//! Stage 6's numeric questions.

use crate::template::Kind;

/// Stage 6's kinds.
pub const KINDS: &[Kind] = &[];
