//! CUDA graphs for decode steps (vLLM's `CUDAGraphRunner`).
//!
//! A decode step of a small model is hundreds of short kernels; launched one by one from the
//! host, the launches, not the GPU, set the pace (SmolLM2-135M: 30 layers × ~10 kernels). A
//! CUDA graph records the whole step once and replays it with one launch. Replay reads the
//! same addresses and the same kernel arguments as the recording, so:
//! - a step's inputs live in persistent buffers filled before each replay
//!   ([`super::cuda_step::StepBuffers`]), never in fresh allocations;
//! - anything in a kernel's arguments must be the same on every step of a graph: the batch is
//!   padded up to one of a few sizes ([`capture_sizes`]), block tables have a fixed width, and
//!   decode attention's launch depends only on how it splits contexts (a partition count that
//!   changes with the batch size and only every 512 × count tokens of context). A graph is
//!   therefore recorded per [`GraphKey`] (padded batch size, partitions);
//! - a step's temporaries are allocated and freed inside the recording (stream-ordered
//!   allocations become graph memory nodes), and the sampled ids land in a persistent buffer.
//!
//! The first step of a key runs eagerly (it sizes every lazily grown workspace, which a
//! recording must not allocate for good); the second records and replays; later ones replay.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kernels::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use kernels::cudarc::driver::{CudaGraph, CudaStream};

use super::cuda_step::device;
use super::{BackendError, Result};

/// Decode batch sizes with a graph: 1, 2, 4, then every multiple of 8 up to `max_num_seqs`
/// (at most 512), as vLLM does, and the limit itself. A batch of 13 runs as 16 with 3 padding
/// rows.
pub fn capture_sizes(max_num_seqs: usize) -> Vec<usize> {
    let max = max_num_seqs.min(512);
    let mut sizes: Vec<usize> = [1, 2, 4].into_iter().filter(|&s| s <= max).collect();
    sizes.extend((8..=max).step_by(8));
    if max > 0 && sizes.last() != Some(&max) {
        sizes.push(max);
    }
    sizes
}

/// The smallest capture size that holds `num_seqs`, if any.
pub fn padded_size(num_seqs: usize, sizes: &[usize]) -> Option<usize> {
    sizes.iter().copied().find(|&s| s >= num_seqs)
}

/// What a recorded decode step depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphKey {
    /// Rows in the padded batch.
    pub num_seqs: usize,
    /// How decode attention splits contexts (`kernels::paged_attention::PagedAttention::partitions`).
    pub partitions: kernels::paged_attention::Partitions,
}

/// An instantiated graph. cudarc's `CudaGraph` holds raw driver handles and so is neither
/// `Send` nor `Sync`.
struct Recorded(CudaGraph);

// SAFETY: a graph is only touched (launched, dropped) through `CudaGraphs`, which the backend
// keeps behind a `Mutex`: calls on one graph are serialized, which is what the driver requires
// of graph objects used from several threads.
unsafe impl Send for Recorded {}

/// The recorded graphs of one backend, by key, for one generation of step buffers.
#[derive(Default)]
pub struct CudaGraphs {
    graphs: HashMap<GraphKey, Recorded>,
    warmed_up: HashSet<GraphKey>,
    /// The step buffers' generation the graphs read; new buffers invalidate every graph.
    generation: u64,
}

impl CudaGraphs {
    /// Graphs recorded so far.
    pub fn len(&self) -> usize {
        self.graphs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }

    /// Runs the step `record` describes, for `key`: eagerly the first time, recorded and
    /// replayed the second, replayed without calling `record` after that. `record` is told
    /// whether the stream is being recorded (then nothing it launches runs until the replay,
    /// so it must not time its ops with events); the result says which of the three it was.
    pub fn run(
        &mut self,
        stream: &Arc<CudaStream>,
        key: GraphKey,
        generation: u64,
        record: &mut dyn FnMut(bool) -> Result<()>,
    ) -> Result<GraphRun> {
        if generation != self.generation {
            self.graphs.clear();
            self.warmed_up.clear();
            self.generation = generation;
        }
        if let Some(graph) = self.graphs.get(&key) {
            let _span =
                tracing::trace_span!("cuda_graph_replay", num_seqs = key.num_seqs).entered();
            graph
                .0
                .launch()
                .map_err(|e| device("cuda graph launch", e))?;
            return Ok(GraphRun::Replayed);
        }
        if self.warmed_up.insert(key) {
            record(false)?;
            return Ok(GraphRun::Eager);
        }
        let _span = tracing::debug_span!("cuda_graph_capture", num_seqs = key.num_seqs).entered();
        let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        stream
            .begin_capture(mode)
            .map_err(|e| device("begin graph capture", e))?;
        let recorded = record(true);
        // End the capture whatever happened, so the stream leaves capture mode.
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        recorded?;
        let graph = graph
            .map_err(|e| device("end graph capture", e))?
            .ok_or_else(|| BackendError::shape("cuda graph", "the capture recorded nothing"))?;
        graph.launch().map_err(|e| device("cuda graph launch", e))?;
        self.graphs.insert(key, Recorded(graph));
        Ok(GraphRun::Recorded)
    }
}

/// How [`CudaGraphs::run`] ran a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphRun {
    /// Launched op by op (the first step of a key).
    Eager,
    /// Recorded, then replayed once.
    Recorded,
    /// Replayed from an earlier recording, without the ops being called on the host.
    Replayed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cover_every_batch_up_to_the_limit() {
        assert_eq!(capture_sizes(1), vec![1]);
        assert_eq!(capture_sizes(3), vec![1, 2, 3]);
        assert_eq!(capture_sizes(20), vec![1, 2, 4, 8, 16, 20]);
        let sizes = capture_sizes(256);
        assert_eq!(sizes.len(), 3 + 32);
        for n in 1..=256 {
            let p = padded_size(n, &sizes).unwrap();
            assert!(p >= n && p - n < 8, "{n} -> {p}");
        }
        assert_eq!(padded_size(257, &sizes), None);
    }
}
