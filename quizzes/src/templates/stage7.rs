//! Stage 7's numeric questions.

use crate::template::Kind;

/// Stage 7's kinds.
pub const KINDS: &[Kind] = &[];
