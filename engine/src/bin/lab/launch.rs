//! `lab launch`: runs a `lab` command as one process per rank (torchrun's contract).
//!
//! ```sh
//! lab launch --nproc-per-node 2 -- generate --model tiny --tp 2 --device cpu --prompt Hello
//! ```
//!
//! Starts `--nproc-per-node` copies of `lab <command>` on this node, each with its place in the
//! environment (`LAB_MASTER_ADDR`, `LAB_NNODES`, `LAB_NODE_RANK`, `LAB_NPROC_PER_NODE`,
//! `LAB_LOCAL_RANK`). Rank 0 (node 0, slot 0) listens on `--master-addr:--master-port`, runs
//! the engine and prints the output; the others serve it (`engine::distributed::
//! process_worker`). On several hosts, run `lab launch` on each with `--nnodes`, its own
//! `--node-rank` and rank 0's host as `--master-addr`.
//!
//! The launcher watches its processes: once one fails, the others stop by themselves (a peer's
//! socket closes, their collectives fail at once); any still running after the collective
//! timeout and a grace period are killed. It exits 0 only if every rank did.

use std::net::ToSocketAddrs;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use engine::distributed::bootstrap::LaunchSpec;
use engine::distributed::process_worker::serve_rank;
use engine::{EngineConfig, EngineParts};

use crate::ModelArgs;

#[derive(Args)]
pub struct LaunchArgs {
    /// Processes (ranks) to start on this node.
    #[arg(long)]
    nproc_per_node: usize,
    /// Nodes in the launch (each runs `lab launch` with its --node-rank).
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index, 0..--nnodes; node 0 holds rank 0.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// The host rank 0 listens on (an address every node can reach).
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// The port rank 0 listens on.
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
    /// The command every process runs, after `--` (e.g. `generate --model tiny --tp 2`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    if args.command.first().map(String::as_str) != Some("generate") {
        bail!(
            "lab launch runs `generate` (e.g. `lab launch --nproc-per-node 2 -- generate \
             --model tiny --tp 2`); got `{}`",
            args.command.join(" ")
        );
    }
    let master = (args.master_addr.as_str(), args.master_port)
        .to_socket_addrs()
        .with_context(|| format!("--master-addr {} does not resolve", args.master_addr))?
        .next()
        .with_context(|| format!("--master-addr {} has no address", args.master_addr))?;
    let spec = |local_rank| LaunchSpec {
        master,
        nnodes: args.nnodes,
        node_rank: args.node_rank,
        nproc_per_node: args.nproc_per_node,
        local_rank,
    };
    spec(0).validate()?;
    let exe = std::env::current_exe().context("cannot find the lab binary to start")?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..args.nproc_per_node {
        let spec = spec(local);
        let child = Command::new(&exe)
            .args(&args.command)
            .envs(spec.to_env())
            .spawn()
            .with_context(|| format!("cannot start rank {}", spec.rank()));
        match child {
            Ok(child) => children.push((spec.rank(), child)),
            Err(e) => {
                kill_all(&mut children);
                return Err(e);
            }
        }
    }
    watch(children, grace_period(&args.command))
}

/// How long the others may take to stop once one rank failed: the collective timeout they
/// run under, plus time to report.
fn grace_period(command: &[String]) -> Duration {
    let secs = command
        .iter()
        .position(|a| a == "--collective-timeout")
        .and_then(|i| command.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(
            EngineConfig::default()
                .parallel
                .collective_timeout
                .as_secs_f64(),
        );
    Duration::from_secs_f64(secs) + Duration::from_secs(5)
}

/// Waits for every rank; once one fails, gives the rest `grace` to stop, then kills them.
fn watch(mut children: Vec<(usize, Child)>, grace: Duration) -> anyhow::Result<()> {
    let mut first_failure: Option<(usize, ExitStatus)> = None;
    let mut deadline: Option<Instant> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait()? {
                Some(status) => {
                    let (rank, _) = children.remove(i);
                    if !status.success() && first_failure.is_none() {
                        first_failure = Some((rank, status));
                        deadline = Some(Instant::now() + grace);
                    }
                }
                None => i += 1,
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let left: Vec<String> = children.iter().map(|(r, _)| r.to_string()).collect();
            kill_all(&mut children);
            let (rank, status) = first_failure.expect("a deadline follows a failure");
            bail!(
                "rank {rank} failed ({status}); rank(s) {} did not stop within {grace:?} and were \
                 killed",
                left.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match first_failure {
        None => Ok(()),
        Some((rank, status)) => bail!("rank {rank} failed ({status}); see its error above"),
    }
}

fn kill_all(children: &mut Vec<(usize, Child)>) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

/// In a process `lab launch` started: puts its place in `config` and, on a rank other than 0,
/// serves rank 0 until it is done (then returns `true`: the caller has nothing left to do).
/// Outside a launch, returns `false` and leaves `config` as it is.
pub fn serve_if_worker(
    model: &ModelArgs,
    config: &mut EngineConfig,
    parts: &EngineParts,
) -> anyhow::Result<bool> {
    let Some(spec) = LaunchSpec::from_env()? else {
        return Ok(false);
    };
    let p = &config.parallel;
    let ranks = p.tensor_parallel_size * p.pipeline_parallel_size;
    if ranks != spec.world_size() {
        bail!(
            "rank {}: the launch has {} processes but --tp {} × --pp {} is {ranks} ranks; \
             give --nproc-per-node × --nnodes = tp × pp",
            spec.rank(),
            spec.world_size(),
            p.tensor_parallel_size,
            p.pipeline_parallel_size
        );
    }
    config.parallel.launch = Some(spec);
    if spec.rank() == 0 {
        return Ok(false);
    }
    serve_rank(model.load()?, config, parts, &spec)?;
    Ok(true)
}

/// Writes each rank's communicator counters and the step broadcast's bytes as JSON (for
/// comparing a launch with threads, and for the book's numbers).
pub fn write_comm_stats(
    path: &std::path::Path,
    engine: &mut engine::LLMEngine,
) -> anyhow::Result<()> {
    let ranks: Vec<serde_json::Value> = engine
        .comm_stats()
        .iter()
        .map(|stats| {
            let ops: serde_json::Map<String, serde_json::Value> = stats
                .iter()
                .map(|(op, s)| {
                    let v = serde_json::json!({
                        "calls": s.calls,
                        "tensor_bytes": s.tensor_bytes,
                        "sent_bytes": s.sent_bytes,
                        "seconds": s.time.as_secs_f64(),
                    });
                    (op.name().to_string(), v)
                })
                .collect();
            serde_json::Value::Object(ops)
        })
        .collect();
    let broadcast = engine.broadcast_stats().map(|b| {
        serde_json::json!({
            "steps": b.steps,
            "delta_bytes": b.delta_bytes,
            "full_bytes": b.full_bytes,
        })
    });
    let value = serde_json::json!({ "ranks": ranks, "broadcast": broadcast });
    std::fs::write(path, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("cannot write --comm-stats-json {}", path.display()))
}
