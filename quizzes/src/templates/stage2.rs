//! Stage 2's numeric questions.

use crate::template::Kind;

/// Stage 2's kinds.
pub const KINDS: &[Kind] = &[];
