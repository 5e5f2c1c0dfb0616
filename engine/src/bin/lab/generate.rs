//! `lab generate`: prompts in, completions out (plain text, or one JSON array with `--json`).

use anyhow::{bail, Context};
use clap::Args;
use engine::{Prompt, SamplingParams, LLM};

use crate::ModelArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt (repeat for several; all run batched).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A JSON file holding an array of prompt strings.
    #[arg(long)]
    prompts_file: Option<std::path::PathBuf>,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of each request's random draws (the same seed gives the same tokens on any batch);
    /// without it, each request gets a fresh one.
    #[arg(long)]
    seed: Option<u64>,
    /// Generate past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Extra token ids that stop generation (repeatable).
    #[arg(long = "stop-token-id")]
    stop_token_ids: Vec<u32>,
    /// Print one JSON array, one object per prompt, in input order.
    #[arg(long)]
    json: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let mut prompts = args.prompts.clone();
    if let Some(path) = &args.prompts_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --prompts-file {}", path.display()))?;
        let list: Vec<String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "--prompts-file {} must be a JSON array of strings",
                path.display()
            )
        })?;
        prompts.extend(list);
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE");
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        max_tokens: args.max_tokens,
        stop_token_ids: args.stop_token_ids.clone(),
        ignore_eos: args.ignore_eos,
        output_logits: false,
    };
    params.validate()?; // before loading the model
    let mut llm = LLM::new(args.model.load()?, args.model.engine_config())?;
    let texts: Vec<String> = if args.chat {
        prompts
            .iter()
            .map(|p| llm.chat_prompt(p))
            .collect::<Result<_, _>>()?
    } else {
        prompts.clone()
    };
    let outputs =
        llm.generate_prompts(texts.iter().cloned().map(Prompt::Text).collect(), &params)?;
    if args.json {
        let array: Vec<_> = texts
            .iter()
            .zip(&outputs)
            .map(|(prompt, o)| {
                serde_json::json!({
                    "prompt": prompt,
                    "prompt_token_ids": o.prompt_token_ids,
                    "token_ids": o.token_ids,
                    "text": o.text,
                    "finish_reason": o.finish_reason.as_str(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
    } else {
        for (prompt, o) in prompts.iter().zip(&outputs) {
            println!(
                "prompt: {prompt:?}\noutput: {:?}  [{} tokens, {}]\n",
                o.text,
                o.token_ids.len(),
                o.finish_reason.as_str()
            );
        }
    }
    Ok(())
}
