//! `lab serve`: the engine behind an OpenAI-compatible HTTP server (`engine::entrypoints`).
//!
//! The address is printed (`listening on http://127.0.0.1:8000`) as soon as the port is bound,
//! before the model loads: until it has, requests get 503 and `/health` says so. With
//! `--port 0` the system picks a free port, and the printed line says which (the tests use it).

pub mod bench;

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use engine::core::scheduling_policy::policy_from_name;
use engine::engine_parts::EngineParts;
use engine::entrypoints::async_llm_engine::{EngineHandle, LoopOptions};
use engine::entrypoints::openai::api_server;
use engine::entrypoints::openai::serving_engine::OpenAIServing;
use engine::{EngineError, LLMEngine};

use crate::ModelArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free one; the printed address says which).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model name clients use in requests (default: the --model value).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Who goes first: fcfs, priority, fair or qos (as `lab generate`).
    #[arg(long, default_value = "fcfs")]
    scheduling_policy: String,
    /// A tenant's weight under fair and qos, as NAME=WEIGHT (repeatable; others weigh 1).
    #[arg(long = "tenant-weight", value_parser = crate::generate::parse_tenant_weight)]
    tenant_weights: Vec<(String, f64)>,
    /// Print a line on stderr for each engine step in which requests join or leave the batch:
    /// continuous batching, live.
    #[arg(long)]
    log_steps: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Bad flags fail before the port is taken.
    let policy = policy_from_name(&args.scheduling_policy, &args.tenant_weights)?;
    if !args.tenant_weights.is_empty() && !matches!(policy.name(), "fair" | "qos") {
        anyhow::bail!("--tenant-weight applies to --scheduling-policy fair or qos");
    }
    let config = args.model.engine_config();
    config.validate()?;
    engine::core::preemption::swap_space_bytes(args.model.swap_space)?;
    let model_name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = api_server::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        println!("listening on http://{local}");
        let model = args.model.clone();
        // Runs on the engine thread, which steps the engine: `load` builds the CPU kernels'
        // pool there (the thread one of its workers), not on this thread, which waits on HTTP.
        let load = move || -> engine::Result<LLMEngine> {
            let parts = EngineParts {
                policy,
                ..EngineParts::default()
            };
            let loaded = model
                .load()
                .map_err(|e| EngineError::InvalidArgument(format!("{e:#}")))?;
            let engine = LLMEngine::with_parts(loaded, config, parts)?;
            eprintln!(
                "model {} loaded: {} KV blocks of {} tokens, up to {} tokens a request; serving",
                model.model,
                engine.num_kv_blocks,
                engine.config.cache.block_size,
                engine.max_model_len
            );
            Ok(engine)
        };
        let options = LoopOptions {
            log_steps: args.log_steps,
        };
        let (handle, loaded) =
            EngineHandle::spawn(load, options).context("cannot start the engine thread")?;
        let serving = Arc::new(OpenAIServing::new(handle, model_name));
        let server = api_server::serve(listener, serving);
        // The server runs until the model fails to load, or Ctrl-C.
        let failed = async {
            match loaded.await {
                Ok(Err(why)) => why,
                Ok(Ok(())) => std::future::pending().await,
                Err(_) => "the engine thread ended while loading".to_string(),
            }
        };
        tokio::select! {
            r = server => r.context("the server failed"),
            why = failed => Err(anyhow::anyhow!("cannot load the model: {why}")),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted; shutting down");
                Ok(())
            }
        }
    })
}
