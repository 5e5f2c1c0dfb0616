//! `lab save-model`: writes a model the engine can load as a Hugging Face directory.
//!
//! Its use: random weights of a real shape, written where the real weights cannot go, so that
//! transformers and this engine run the very same model (scripts/gpu-engine-check.sh).
//!
//! ```sh
//! lab save-model --model engine/configs/smollm2-135m.json --random-weights \
//!     --embed-scale 0.0625 --query-scale 4 --out /tmp/smollm2
//! ```
//!
//! The two scales make random weights worth comparing (see
//! `engine::model_loader::random_conditioning`).

use anyhow::bail;
use clap::{Args, ValueEnum};
use engine::model_loader::hf_writer::{save_model, DiskDtype};
use engine::model_loader::random_conditioning::{condition, Conditioning};
use engine::model_source::{load_model, ModelSpec, DEFAULT_WEIGHT_SEED};

#[derive(Args)]
pub struct SaveModelArgs {
    /// `tiny`, `smollm2`, a Hugging Face model directory, or a config.json (with
    /// --random-weights).
    #[arg(long)]
    model: String,
    /// Ignore the source's weights; draw random ones of the config's shape.
    #[arg(long)]
    random_weights: bool,
    /// Seed of random weights (the tiny model and --random-weights).
    #[arg(long, default_value_t = DEFAULT_WEIGHT_SEED)]
    weights_seed: u64,
    /// Directory to create (must not exist).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Dtype of model.safetensors.
    #[arg(long, value_enum, default_value_t = Dtype::Bf16)]
    dtype: Dtype,
    /// Multiply the token embeddings by this (and, with a tied LM head, the final norm by its
    /// inverse): below 1, greedy tokens stop copying the last input token.
    #[arg(long, default_value_t = 1.0)]
    embed_scale: f32,
    /// Multiply every query projection by this: above 1, attention selects by content and
    /// position instead of averaging the context.
    #[arg(long, default_value_t = 1.0)]
    query_scale: f32,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    Bf16,
    F32,
}

pub fn run(args: SaveModelArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        // Before drawing or loading gigabytes of weights.
        bail!(
            "--out {} already exists; delete it first or choose another directory",
            args.out.display()
        );
    }
    let how = Conditioning {
        embed_scale: args.embed_scale,
        query_scale: args.query_scale,
    };
    how.validate()?;
    let mut model = load_model(
        &ModelSpec::parse(&args.model),
        args.random_weights,
        args.weights_seed,
    )?;
    let config = model.config.clone();
    condition(&config, model.host_weights()?, how)?;
    let dtype = match args.dtype {
        Dtype::Bf16 => DiskDtype::Bf16,
        Dtype::F32 => DiskDtype::F32,
    };
    save_model(model, dtype, &args.out)?;
    println!("{}", args.out.display());
    Ok(())
}
