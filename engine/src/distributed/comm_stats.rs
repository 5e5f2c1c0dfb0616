//! [`CommStats`]: what one rank's communicator calls have cost, per kind of call.
//!
//! Two byte counts per call, because they answer different questions. `tensor_bytes` is the
//! size of the tensor the call is about (what a model's shapes predict: "each all-reduce moves a
//! `[tokens, hidden]` tensor"). `sent_bytes` is what this rank actually pushed to its peers,
//! which depends on the algorithm: a ring all-reduce sends 2(N−1)/N of the tensor from every
//! rank, whatever N. Their ratio is what NCCL's tests call the bus-bandwidth factor.

use std::time::Duration;

use super::communicator::CommOp;

/// The totals of one kind of call on one rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Calls made, failed ones included.
    pub calls: u64,
    /// Calls that returned an error.
    pub failures: u64,
    /// The tensors' sizes: the buffer for all-reduce, broadcast, send and recv; the whole
    /// gathered output for all-gather and the whole input for reduce-scatter (NCCL tests'
    /// convention); zero for barrier.
    pub tensor_bytes: u64,
    /// Payload bytes this rank sent to other ranks (message headers not counted).
    pub sent_bytes: u64,
    /// Wall time spent inside the calls, waiting for peers included.
    pub time: Duration,
}

impl OpStats {
    /// Adds `other`'s counts to these.
    fn add(&mut self, other: &OpStats) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.tensor_bytes += other.tensor_bytes;
        self.sent_bytes += other.sent_bytes;
        self.time += other.time;
    }
}

/// One rank's [`OpStats`] for each [`CommOp`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommStats {
    ops: [OpStats; CommOp::ALL.len()],
}

impl CommStats {
    /// The totals of calls of kind `op`.
    pub fn op(&self, op: CommOp) -> &OpStats {
        &self.ops[op.index()]
    }

    /// Each kind with its totals, in [`CommOp::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (CommOp, &OpStats)> {
        CommOp::ALL.iter().map(|&op| (op, self.op(op)))
    }

    /// The totals over every kind of call.
    pub fn total(&self) -> OpStats {
        let mut total = OpStats::default();
        for op in &self.ops {
            total.add(op);
        }
        total
    }

    /// Adds every count of `other` to these (a rank's two groups' counters as one table: a
    /// pipeline rank's TP collectives and its PP sends and receives).
    pub fn merge(&mut self, other: &CommStats) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.add(theirs);
        }
    }

    /// What was counted after `earlier`, a reading of these same counters: the calls a
    /// recorded CUDA graph makes, counted once while it was recorded and added again at each
    /// replay (a replay calls nothing on the host).
    pub fn since(&self, earlier: &CommStats) -> CommStats {
        let mut delta = self.clone();
        for (d, e) in delta.ops.iter_mut().zip(&earlier.ops) {
            d.calls = d.calls.saturating_sub(e.calls);
            d.failures = d.failures.saturating_sub(e.failures);
            d.tensor_bytes = d.tensor_bytes.saturating_sub(e.tensor_bytes);
            d.sent_bytes = d.sent_bytes.saturating_sub(e.sent_bytes);
            d.time = d.time.saturating_sub(e.time);
        }
        delta
    }

    /// Adds time to calls of kind `op` already counted: a GPU collective's device time, known
    /// only once its stream has passed the events around it.
    pub fn add_time(&mut self, op: CommOp, time: Duration) {
        self.ops[op.index()].time += time;
    }

    /// Sets the totals of kind `op` (a table that crossed from another process).
    pub fn set(&mut self, op: CommOp, stats: OpStats) {
        self.ops[op.index()] = stats;
    }

    /// Adds one call of kind `op`. A communicator calls this once per call, failed or not.
    pub fn record(
        &mut self,
        op: CommOp,
        tensor_bytes: u64,
        sent_bytes: u64,
        time: Duration,
        failed: bool,
    ) {
        self.ops[op.index()].add(&OpStats {
            calls: 1,
            failures: u64::from(failed),
            tensor_bytes,
            sent_bytes,
            time,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_what_was_added_after_a_reading() {
        let mut stats = CommStats::default();
        let ms = Duration::from_millis(1);
        stats.record(CommOp::AllReduce, 400, 600, ms, false);
        let before = stats.clone();
        stats.record(CommOp::AllReduce, 100, 150, ms, false);
        stats.record(CommOp::AllGather, 64, 32, Duration::ZERO, false);
        let delta = stats.since(&before);
        assert_eq!(delta.op(CommOp::AllReduce).calls, 1);
        assert_eq!(delta.op(CommOp::AllReduce).tensor_bytes, 100);
        assert_eq!(delta.op(CommOp::AllReduce).sent_bytes, 150);
        assert_eq!(delta.op(CommOp::AllReduce).time, ms);
        assert_eq!(delta.op(CommOp::AllGather).calls, 1);
        assert_eq!(delta.total().calls, 2);
        let mut again = before.clone();
        again.merge(&delta);
        assert_eq!(
            again, stats,
            "a reading plus what came after is the later reading"
        );
    }

    #[test]
    fn record_adds_to_its_op_and_to_the_total() {
        let mut stats = CommStats::default();
        let ms = Duration::from_millis(1);
        stats.record(CommOp::AllReduce, 400, 600, ms, false);
        stats.record(CommOp::AllReduce, 400, 600, ms, true);
        stats.record(CommOp::Send, 8, 8, ms, false);
        let ar = stats.op(CommOp::AllReduce);
        assert_eq!(
            (ar.calls, ar.failures, ar.tensor_bytes, ar.sent_bytes),
            (2, 1, 800, 1200)
        );
        assert_eq!(ar.time, 2 * ms);
        assert_eq!(stats.op(CommOp::Recv), &OpStats::default());
        let total = stats.total();
        assert_eq!(
            (total.calls, total.sent_bytes, total.time),
            (3, 1208, 3 * ms)
        );
        assert_eq!(stats.iter().count(), CommOp::ALL.len());
    }

    #[test]
    fn each_op_indexes_its_own_row() {
        for (i, op) in CommOp::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i, "{op}");
        }
    }
}
