//! [`serve_rank`]: the life of a rank other than 0 when ranks are processes (see
//! [`super::process_executor`]): join the launch, build the worker, then answer the driver's
//! commands on the control socket until it says stop or a step fails.

use std::net::TcpStream;
use std::time::Instant;

use super::bootstrap::{ControlLink, LaunchSpec};
use super::control_messages::{decode_command, encode_reply};
use super::process_executor::join_launch;
use super::rank_worker::{Command, RankWorker, Reply};
use super::wire::{read_frame, write_frame};
use crate::config::EngineConfig;
use crate::engine_parts::EngineParts;
use crate::error::{EngineError, Result};
use crate::model_executor::pipeline_parallel::check_pipeline_parallel;
use crate::model_executor::tensor_parallel::check_tensor_parallel;
use crate::model_source::LoadedModel;

/// Runs rank `spec.rank()` (not 0) of a launch on `model` until the driver ends it. Returns
/// `Ok` when the driver shut the group down, and the first error otherwise (the driver gone,
/// a peer gone or hung, a step that failed here), in one line that names this rank.
pub fn serve_rank(
    model: LoadedModel,
    engine: &EngineConfig,
    parts: &EngineParts,
    spec: &LaunchSpec,
) -> Result<()> {
    let rank = spec.rank();
    if rank == 0 {
        return Err(EngineError::InvalidArgument(
            "rank 0 is the driver: it runs the engine with a ProcessExecutor".into(),
        ));
    }
    engine.validate()?;
    let (tp, pp) = (
        engine.parallel.tensor_parallel_size,
        engine.parallel.pipeline_parallel_size,
    );
    // The same checks as the driver's engine, so a bad split fails alike on every rank.
    check_tensor_parallel(&model.config, &model.name, tp)?;
    check_pipeline_parallel(&model.config, &model.name, pp)?;
    let joined = join_launch(model.weights, &model.config, engine, parts, spec)?;
    let ControlLink::Worker(mut control) = joined.control else {
        unreachable!("a rank other than 0 has one control socket")
    };
    let _span = joined.spec.span().entered();
    let mut worker = match RankWorker::build(joined.spec) {
        Ok(worker) => worker,
        Err(e) => {
            let message = e.to_string();
            let _ = send(rank, &mut control, &Reply::Ready(Err(e)));
            return Err(EngineError::Io(message));
        }
    };
    send(rank, &mut control, &Reply::Ready(Ok(())))?;
    loop {
        let frame = read_frame(&mut control).map_err(|e| gone(rank, e.to_string()))?;
        let Some(frame) = frame else {
            return Err(gone(rank, "it closed the connection".into()));
        };
        let command = decode_command(&frame, Instant::now())
            .map_err(|e| EngineError::Io(format!("rank {rank}: a command it cannot read: {e}")))?;
        if let Command::Shutdown = command {
            return Ok(());
        }
        let Some(reply) = worker.handle(command) else {
            continue;
        };
        // A failed step is answered, then ends the rank (its peers are out of step).
        let failed = match &reply {
            Reply::Output(Err(e), ..) => Some(e.to_string()),
            _ => None,
        };
        // The step's own failure (a peer gone, say) is the error to report, even when the
        // driver has ended too and cannot be told.
        let sent = send(rank, &mut control, &reply);
        if let Some(message) = failed {
            return Err(EngineError::Io(message));
        }
        sent?;
    }
}

fn send(rank: usize, control: &mut TcpStream, reply: &Reply) -> Result<()> {
    write_frame(control, &encode_reply(reply))
        .map_err(|e| gone(rank, format!("cannot answer it ({e})")))
}

fn gone(rank: usize, why: String) -> EngineError {
    EngineError::Io(format!(
        "rank {rank}: the driver (rank 0) is gone: {why} (it ended, failed or was killed)"
    ))
}
