//! Stage 5's numeric questions: tensor parallelism, counted by the CPU engine's communicators.

use super::*;
use crate::template::{keep, Args, Kind, Rng, Values};

/// Stage 5's kinds.
pub const KINDS: &[Kind] = &[Kind {
    name: "ring_sent_ratio",
    check_fn: "ring_sent_ratio",
    draw: draw_ring,
    derive: derive_ring,
    refit: keep,
}];

// A ring of 2 to 8 ranks (each draw runs the CPU communicator's all-reduce on that many
// threads, so the test stays small).
fn draw_ring(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "ranks", rng.range(2, 8));
    args
}

fn derive_ring(args: &Args) -> Result<Values, String> {
    let n = int(args, "ranks")?;
    Ok(values(&[(
        "sent_steps",
        (2 * n.saturating_sub(1)).to_string(),
    )]))
}
