//! Where the ranks of one tensor-parallel group, threads of one process, trade the device
//! addresses of their custom all-reduce buffers (`kernels::custom_all_reduce`): each rank puts
//! its own and waits for everyone's, as NCCL's ranks trade their unique id.
//!
//! The wait has the group's collective timeout: a rank that fails before it gets here (its
//! weights do not fit, say) must not leave the others waiting for ever.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One group's meeting point (shared by its ranks through an `Arc`).
#[derive(Debug)]
pub struct PeerRendezvous {
    /// Rank r's inbox address, once it has arrived.
    slots: Mutex<Vec<Option<u64>>>,
    arrived: Condvar,
    timeout: Duration,
}

impl PeerRendezvous {
    /// A meeting point for `ranks` ranks that wait at most `timeout` for each other.
    pub fn new(ranks: usize, timeout: Duration) -> Self {
        PeerRendezvous {
            slots: Mutex::new(vec![None; ranks]),
            arrived: Condvar::new(),
            timeout,
        }
    }

    /// Puts `rank`'s inbox address and returns every rank's, in rank order, once all have come;
    /// an error naming the missing ranks after the timeout.
    pub fn exchange(&self, rank: usize, mine: u64) -> Result<Vec<u64>, String> {
        let deadline = Instant::now() + self.timeout;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let ranks = slots.len();
        match slots.get_mut(rank) {
            Some(slot) => *slot = Some(mine),
            None => return Err(format!("rank {rank} of a group of {ranks}")),
        }
        self.arrived.notify_all();
        loop {
            if slots.iter().all(Option::is_some) {
                return Ok(slots.iter().flatten().copied().collect());
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> = (0..ranks)
                    .filter(|&r| slots[r].is_none())
                    .map(|r| r.to_string())
                    .collect();
                return Err(format!(
                    "rank {rank}: rank(s) {} never brought their all-reduce buffers within {:?} \
                     (did they fail to start?)",
                    missing.join(", "),
                    self.timeout
                ));
            }
            slots = self
                .arrived
                .wait_timeout(slots, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_rank_gets_every_address_in_rank_order() {
        let r = Arc::new(PeerRendezvous::new(3, Duration::from_secs(5)));
        let got: Vec<_> = std::thread::scope(|s| {
            let jobs: Vec<_> = (0..3)
                .rev()
                .map(|rank| {
                    let r = Arc::clone(&r);
                    s.spawn(move || r.exchange(rank, 10 + rank as u64))
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        for g in got {
            assert_eq!(g.unwrap(), vec![10, 11, 12]);
        }
    }

    #[test]
    fn a_missing_rank_ends_the_wait_with_its_number() {
        let r = PeerRendezvous::new(3, Duration::from_millis(50));
        let e = r.exchange(0, 1).unwrap_err();
        assert!(e.contains("rank(s) 1, 2 never"), "{e}");
        assert!(r
            .exchange(7, 1)
            .unwrap_err()
            .contains("rank 7 of a group of 3"));
    }
}
