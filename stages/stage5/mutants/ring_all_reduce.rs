//! Plausible wrong ring all-reduces, written as a learner would, from `send` and `recv`:
//!
//! - `ring_skips_last_reduce_scatter_step`: the reduce-scatter runs N − 2 steps, not N − 1, so
//!   each "finished" chunk lacks one rank's contribution (at N = 2, every one).
//! - `ring_sends_whole_buffer`: every step sends the whole buffer and the receiver uses only
//!   the chunk it needs: the right sums, but each rank sends 2(N − 1) × size instead of
//!   2(N − 1)/N × size.
//! - `ring_all_gather_off_by_one`: the all-gather starts from chunk r + 1 instead of chunk r,
//!   passing on partial sums (the chunk index is one step ahead).

use std::ops::Range;

use engine::distributed::ring::ring_chunk;
use engine::distributed::{CommError, Communicator};

use super::active;

pub fn ring_all_reduce(comm: &mut dyn Communicator, buf: &mut [f32]) -> Result<(), CommError> {
    let skip_last = active("ring_skips_last_reduce_scatter_step");
    let whole = active("ring_sends_whole_buffer");
    let off_by_one = active("ring_all_gather_off_by_one");
    if !(skip_last || whole || off_by_one) {
        return comm.all_reduce_sum(buf);
    }
    let (n, r, len) = (comm.world_size(), comm.rank(), buf.len());
    let (right, left) = ((r + 1) % n, (r + n - 1) % n);
    // Indices are taken mod n, after adding 2n to keep them non-negative.
    let chunk = |i: usize| ring_chunk(len, n, i % n);
    let mut scratch = vec![0.0; len];
    let mut exchange = |comm: &mut dyn Communicator,
                        buf: &mut [f32],
                        send: Range<usize>,
                        recv: Range<usize>,
                        add: bool|
     -> Result<(), CommError> {
        let got = if whole {
            comm.send(buf, right)?;
            comm.recv(&mut scratch, left)?;
            &scratch[recv.clone()]
        } else {
            comm.send(&buf[send], right)?;
            comm.recv(&mut scratch[..recv.len()], left)?;
            &scratch[..recv.len()]
        };
        for (d, x) in buf[recv].iter_mut().zip(got) {
            if add {
                *d += x;
            } else {
                *d = *x;
            }
        }
        Ok(())
    };
    let reduce_steps = if skip_last {
        n.saturating_sub(2)
    } else {
        n - 1
    };
    for s in 0..reduce_steps {
        let (send, recv) = (chunk(r + 2 * n - 1 - s), chunk(r + 2 * n - 2 - s));
        exchange(comm, buf, send, recv, true)?;
    }
    let first = if off_by_one { r + 1 } else { r };
    for s in 0..n - 1 {
        let (send, recv) = (chunk(first + 2 * n - s), chunk(first + 2 * n - 1 - s));
        exchange(comm, buf, send, recv, false)?;
    }
    Ok(())
}
