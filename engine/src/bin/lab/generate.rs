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
    /// A JSON file holding an array of prompts, each a string or an array of token ids
    /// (e.g. `["Hello", [1, 2, 3]]`): ids go to the model as they are, untokenized.
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
    /// With --json: per generated token, from the raw logits, the top1 - top2 margin, the
    /// runner-up id and the top logit (`margins`, `runner_up_ids`, `top1_logits`), to tell a
    /// real mismatch from a near tie (scripts/compare_greedy.py).
    #[arg(long, requires = "json")]
    logit_margins: bool,
}

/// The top of one row of raw logits.
struct Top2 {
    /// Top logit minus the best other one.
    margin: f32,
    runner_up: u32,
    top1: f32,
}

/// The top is the lowest id among equals, as greedy picks it.
fn top2(logits: &[f32]) -> Top2 {
    let best = engine::sampler::argmax(logits) as usize;
    let (second, value) = logits.iter().enumerate().filter(|&(i, _)| i != best).fold(
        (0, f32::NEG_INFINITY),
        |acc, (i, &v)| {
            if v > acc.1 {
                (i, v)
            } else {
                acc
            }
        },
    );
    Top2 {
        margin: logits[best] - value,
        runner_up: second as u32,
        top1: logits[best],
    }
}

/// One item of `--prompts-file`: text, or token ids that skip the tokenizer (random-weight
/// models compared with transformers need no real vocabulary).
#[derive(serde::Deserialize, serde::Serialize, Clone)]
#[serde(untagged)]
enum PromptItem {
    Text(String),
    TokenIds(Vec<u32>),
}

fn read_prompts_file(path: &std::path::Path) -> anyhow::Result<Vec<PromptItem>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --prompts-file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "--prompts-file {} must be a JSON array whose items are strings or arrays of \
             token ids",
            path.display()
        )
    })
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let mut prompts: Vec<PromptItem> = args.prompts.iter().cloned().map(PromptItem::Text).collect();
    if let Some(path) = &args.prompts_file {
        prompts.extend(read_prompts_file(path)?);
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE");
    }
    if args.chat {
        if let Some(i) = prompts
            .iter()
            .position(|p| matches!(p, PromptItem::TokenIds(_)))
        {
            bail!(
                "--chat wraps text in a template, but prompt {} is token ids",
                i + 1
            );
        }
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        max_tokens: args.max_tokens,
        stop_token_ids: args.stop_token_ids.clone(),
        ignore_eos: args.ignore_eos,
        output_logits: args.logit_margins,
    };
    params.validate()?; // before loading the model
    let mut llm = LLM::new(args.model.load()?, args.model.engine_config())?;
    // What the engine is given: with --chat, each text wrapped in the template.
    let inputs: Vec<PromptItem> = prompts
        .iter()
        .map(|p| match p {
            PromptItem::Text(t) if args.chat => llm.chat_prompt(t).map(PromptItem::Text),
            other => Ok(other.clone()),
        })
        .collect::<Result<_, _>>()?;
    let engine_prompts = inputs
        .iter()
        .map(|p| match p {
            PromptItem::Text(t) => Prompt::Text(t.clone()),
            PromptItem::TokenIds(ids) => Prompt::TokenIds(ids.clone()),
        })
        .collect();
    let outputs = llm.generate_prompts(engine_prompts, &params)?;
    if args.json {
        let array: Vec<_> = inputs
            .iter()
            .zip(&outputs)
            .map(|(prompt, o)| {
                let mut item = serde_json::json!({
                    // A string, or the ids as given.
                    "prompt": prompt,
                    "prompt_token_ids": o.prompt_token_ids,
                    "token_ids": o.token_ids,
                    "text": o.text,
                    "finish_reason": o.finish_reason.as_str(),
                });
                if args.logit_margins {
                    let tops: Vec<Top2> = o.logits.iter().map(|row| top2(row)).collect();
                    item["margins"] = tops.iter().map(|t| t.margin).collect::<Vec<_>>().into();
                    item["runner_up_ids"] =
                        tops.iter().map(|t| t.runner_up).collect::<Vec<_>>().into();
                    item["top1_logits"] = tops.iter().map(|t| t.top1).collect::<Vec<_>>().into();
                }
                item
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
    } else {
        for (prompt, o) in prompts.iter().zip(&outputs) {
            let prompt = match prompt {
                PromptItem::Text(t) => format!("{t:?}"),
                PromptItem::TokenIds(ids) => format!("{} token ids", ids.len()),
            };
            println!(
                "prompt: {prompt}\noutput: {:?}  [{} tokens, {}]\n",
                o.text,
                o.token_ids.len(),
                o.finish_reason.as_str()
            );
        }
    }
    Ok(())
}
