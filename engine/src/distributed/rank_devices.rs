//! Which GPU each rank runs on, and how many KV blocks the ranks' GPUs hold together.
//!
//! With `--device cuda:F`, world rank `r` takes GPU `(F + r) mod G` of the `G` this process
//! sees: one rank per GPU when there are enough of them, as vLLM places its workers. With
//! fewer GPUs than ranks, ranks share them (each rank has its own weights and cache on the
//! shared GPU); that serves to check tensor parallelism on one GPU, not to speed anything up.
//!
//! The KV cache gets what every GPU can give: on GPU `g`, the memory that
//! `--gpu-memory-utilization` allows, less what is in use now, less each of its ranks'
//! weights and activations (their shards, from `memory_model`), divided by what one block
//! costs all of its ranks together (each rank holds its KV heads for its stage's layers). The
//! smallest over the GPUs is the number of blocks, since every rank holds every block.

use kernels::cudarc::driver::CudaContext;
use kernels::custom_all_reduce::enable_peer_access;
use kernels::nccl::{nccl_available, NcclId};

use super::memory_model::{
    kv_bytes_per_token_per_gpu, layers_per_stage, stage_weight_bytes_per_gpu,
};
use super::parallel_state::RankLayout;
use crate::backend::cuda_backend::activation_bytes;
use crate::backend::BackendError;
use crate::config::{CustomAllReduce, Device, EngineConfig, ModelConfig};
use crate::error::{EngineError, Result};
use crate::model_executor::tensor_parallel;

/// The device of world rank `rank` when the group runs on `device` (see the module docs).
pub fn rank_device(device: Device, rank: usize, num_gpus: usize) -> Device {
    match device {
        Device::Cuda(first) => Device::Cuda((first + rank) % num_gpus.max(1)),
        other => other,
    }
}

/// One NCCL id per pipeline stage's TP group when every group has its ranks on distinct GPUs
/// and NCCL is installed; `None`s (the host path) otherwise, with the reason in the log.
/// `ranks_per_node` ranks share a node's `num_gpus` GPUs (all of them in one process; a
/// launch's processes per node): a TP group's consecutive ranks land on distinct GPUs when
/// the node has at least as many GPUs as the group has ranks there.
pub fn nccl_ids(
    device: Device,
    layout: RankLayout,
    num_gpus: usize,
    ranks_per_node: usize,
) -> Result<Vec<Option<NcclId>>> {
    let none = vec![None; layout.pp];
    let Device::Cuda(_) = device else {
        return Ok(none);
    };
    if !groups_on_nccl(layout.tp, num_gpus, ranks_per_node) {
        return Ok(none);
    }
    (0..layout.pp)
        .map(|_| {
            NcclId::new()
                .map(Some)
                .map_err(|e| EngineError::Internal(e.to_string()))
        })
        .collect()
}

/// Whether a TP group of threads on `gpus` (one device per rank) sums its small all-reduces
/// with the custom all-reduce (`--custom-all-reduce on`, [`CustomAllReduce`]): only with a GPU
/// per rank (see [`CustomAllReduce`] for why not on a shared one), once every pair of them has
/// peer access (enabled here, on their primary contexts, which the ranks' threads then use).
/// Where it fails the group keeps NCCL or the host, with the reason in the log. The same
/// answer for every rank: they decide nothing alone.
pub fn custom_all_reduce_group(engine: &EngineConfig, gpus: &[Device]) -> bool {
    if engine.parallel.custom_all_reduce == CustomAllReduce::Off || gpus.len() < 2 {
        return false;
    }
    if !gpus.iter().all(|d| matches!(d, Device::Cuda(_))) {
        return false;
    }
    let mut ordinals: Vec<usize> = gpus
        .iter()
        .filter_map(|d| match d {
            Device::Cuda(o) => Some(*o),
            _ => None,
        })
        .collect();
    ordinals.sort_unstable();
    ordinals.dedup();
    if ordinals.len() < gpus.len() {
        tracing::info!("ranks share a GPU: no custom all-reduce");
        return false;
    }
    let contexts: std::result::Result<Vec<_>, _> =
        ordinals.iter().map(|&o| CudaContext::new(o)).collect();
    let enabled = contexts.map_err(|e| e.to_string()).and_then(|ctxs| {
        for a in &ctxs {
            for b in &ctxs {
                enable_peer_access(a, b).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    });
    if let Err(e) = enabled {
        tracing::info!(%e, "no peer access between the group's GPUs: no custom all-reduce");
        return false;
    }
    true
}

/// Whether TP groups of `tp` ranks on GPUs run their collectives on NCCL (see [`nccl_ids`]);
/// the reason why not goes to the log.
fn groups_on_nccl(tp: usize, num_gpus: usize, ranks_per_node: usize) -> bool {
    if tp < 2 {
        return false;
    }
    if num_gpus < tp.min(ranks_per_node) {
        tracing::info!(
            tp,
            num_gpus,
            "fewer GPUs than TP ranks: ranks share GPUs, no NCCL"
        );
        return false;
    }
    if let Err(e) = nccl_available() {
        tracing::info!(%e, "no NCCL: collectives go through the host");
        return false;
    }
    true
}

/// How the TP groups of a run in one process sum their all-reduces, as the executor decides
/// it: what the course's formulas must count each value as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllReduceBackend {
    /// The CPU engine: the CPU communicator sums f32.
    Cpu,
    /// Ranks on GPUs, summing through the host (the CPU communicator, f32).
    Host,
    /// NCCL, bf16.
    Nccl,
    /// The custom all-reduce over peer memory, bf16 (up to its capacity; a larger all-reduce
    /// takes NCCL if the group has it, else the host).
    Custom,
}

impl AllReduceBackend {
    /// Bytes each summed value is counted as.
    pub fn value_bytes(self) -> u64 {
        match self {
            AllReduceBackend::Cpu | AllReduceBackend::Host => 4,
            AllReduceBackend::Nccl | AllReduceBackend::Custom => 2,
        }
    }

    /// What sums, in words.
    pub fn describe(self) -> &'static str {
        match self {
            AllReduceBackend::Cpu => "f32, CPU communicator",
            AllReduceBackend::Host => "f32 through the host",
            AllReduceBackend::Nccl => "bf16 on NCCL",
            AllReduceBackend::Custom => "bf16, custom all-reduce over peer memory",
        }
    }
}

/// [`AllReduceBackend`] of a run of `engine`'s TP groups as threads of this process (the
/// decisions of [`nccl_ids`] and [`custom_all_reduce_group`], for the first stage's group).
pub fn all_reduce_backend(engine: &EngineConfig) -> AllReduceBackend {
    let tp = engine.parallel.tensor_parallel_size;
    let Device::Cuda(_) = engine.device else {
        return AllReduceBackend::Cpu;
    };
    let num_gpus = gpu_count().unwrap_or(0);
    // Processes of a launch share no addresses: no custom all-reduce between them.
    let (per_node, threads) = match &engine.parallel.launch {
        Some(l) => (l.nproc_per_node, false),
        None => (tp * engine.parallel.pipeline_parallel_size, true),
    };
    let nccl = groups_on_nccl(tp, num_gpus, per_node);
    let gpus: Vec<Device> = (0..tp)
        .map(|r| rank_device(engine.device, r, num_gpus))
        .collect();
    let custom = threads && custom_all_reduce_group(engine, &gpus);
    match (custom, nccl) {
        (true, _) => AllReduceBackend::Custom,
        (false, true) => AllReduceBackend::Nccl,
        (false, false) => AllReduceBackend::Host,
    }
}

/// GPUs this process sees. Call only once a GPU is known to be there (`Device::resolve`).
pub fn gpu_count() -> Result<usize> {
    CudaContext::device_count()
        .map(|n| n as usize)
        .map_err(|e| gpu_error("count the GPUs", e))
}

/// KV blocks every rank can hold, over the GPUs of `layout`'s ranks placed from `first`.
pub fn kv_blocks_on_gpus(
    config: &ModelConfig,
    engine: &EngineConfig,
    layout: RankLayout,
    first: usize,
    num_gpus: usize,
) -> Result<usize> {
    let (tp, pp) = (layout.tp, layout.pp);
    let weights = stage_weight_bytes_per_gpu(config, tp, pp);
    let layers = layers_per_stage(config.num_hidden_layers, pp);
    let local = tensor_parallel::rank_config(config, tp);
    let activations = activation_bytes(&local, engine) as u64;
    let block = engine.cache.block_size as u64;
    // Per GPU: the bytes its ranks take before any cache, and one block's cost to them all.
    let mut taken = vec![0u64; num_gpus];
    let mut per_block = vec![0u64; num_gpus];
    for rank in 0..layout.world_size() {
        let g = (first + rank) % num_gpus;
        let (stage, _) = layout.coords(rank);
        taken[g] += weights[stage] + activations;
        per_block[g] += kv_bytes_per_token_per_gpu(config, tp, layers[stage]) * block;
    }
    let mut blocks = u64::MAX;
    for g in (0..num_gpus).filter(|&g| per_block[g] > 0) {
        let ctx = CudaContext::new(g).map_err(|e| gpu_error("open the GPU", e))?;
        let (free, total) = ctx
            .mem_get_info()
            .map_err(|e| gpu_error("query free memory", e))?;
        let allowed = (total as f64 * engine.cache.gpu_memory_utilization as f64) as u64;
        let used = (total - free) as u64;
        let room = allowed.saturating_sub(used + taken[g]);
        if room < per_block[g] {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(EngineError::from(BackendError::OutOfMemory(format!(
                "no room for a KV cache on GPU {g}: {:.2} GiB allowed by --gpu-memory-utilization \
                 {}, {:.2} GiB in use, {:.2} GiB for its ranks' weights and activations; raise \
                 --gpu-memory-utilization, use more GPUs, or lower --max-num-batched-tokens",
                gib(allowed),
                engine.cache.gpu_memory_utilization,
                gib(used),
                gib(taken[g]),
            ))));
        }
        blocks = blocks.min(room / per_block[g]);
    }
    Ok(blocks.max(1) as usize)
}

fn gpu_error(op: &'static str, e: kernels::cudarc::driver::DriverError) -> EngineError {
    EngineError::from(BackendError::Device {
        backend: "cuda",
        op,
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_take_gpus_in_turn_from_the_first() {
        let on = |first, rank, n| rank_device(Device::Cuda(first), rank, n);
        assert_eq!(on(0, 0, 2), Device::Cuda(0));
        assert_eq!(on(0, 1, 2), Device::Cuda(1));
        assert_eq!(on(0, 3, 2), Device::Cuda(1)); // 4 ranks on 2 GPUs: two each
        assert_eq!(on(1, 0, 4), Device::Cuda(1));
        assert_eq!(on(1, 3, 4), Device::Cuda(0));
        assert_eq!(on(0, 1, 1), Device::Cuda(0)); // one GPU: every rank shares it
        assert_eq!(rank_device(Device::Cpu, 3, 0), Device::Cpu);
    }
}
