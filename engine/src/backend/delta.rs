//! What a block adds to the residual stream as the next block begins.
//!
//! A decoder layer's two blocks each end with a projection whose output joins the residual
//! stream, and the next block begins by adding it and normalizing (`fused_add_rms_norm`). Under
//! tensor parallelism those projections (o_proj, down_proj) are row-parallel: each rank holds
//! only its share of the output, and an all-reduce completes it. The model hands the next block
//! that share, marked [`Delta::Partial`], and the backend decides how to complete it: the plain
//! way is the all-reduce, then the add and the norm; a GPU group may do all three in one launch
//! (vLLM fuses the same pair). With one rank, the share is the whole output and the all-reduce
//! does nothing.

use super::{Backend, Result};

/// The output of the previous block, not yet added into the residual stream.
pub enum Delta<T> {
    /// Nothing to add: the first layer's attention block, whose stream is the embedding.
    None,
    /// The whole output (a pipeline stage received it whole from the one before).
    Whole(T),
    /// This rank's share of a row-parallel projection's output: the sum over the tensor-parallel
    /// group is the output.
    Partial(T),
}

impl<T> Delta<T> {
    /// Leaves [`Delta::None`] in its place (`Option::take`'s twin).
    pub fn take(&mut self) -> Delta<T> {
        std::mem::replace(self, Delta::None)
    }

    /// The whole output: a partial one all-reduced over `backend`'s group first.
    pub fn into_whole<B: Backend<Tensor = T> + ?Sized>(self, backend: &B) -> Result<Option<T>> {
        match self {
            Delta::None => Ok(None),
            Delta::Whole(x) => Ok(Some(x)),
            Delta::Partial(mut x) => {
                backend.all_reduce(&mut x)?;
                Ok(Some(x))
            }
        }
    }
}

impl<T> From<Option<T>> for Delta<T> {
    /// A whole output, or none.
    fn from(x: Option<T>) -> Self {
        x.map_or(Delta::None, Delta::Whole)
    }
}
