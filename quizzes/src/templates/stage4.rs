//! Stage 4's numeric questions.

use crate::template::Kind;

/// Stage 4's kinds.
pub const KINDS: &[Kind] = &[];
