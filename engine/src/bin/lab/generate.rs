//! `lab generate`: prompts in, completions out (plain text, or one JSON array with `--json`).

use anyhow::{bail, Context};
use clap::Args;
use engine::core::scheduling_policy::policy_from_name;
use engine::engine_parts::EngineParts;
use engine::{Prompt, SamplingParams, LLM};

use crate::step_stats;

use crate::ModelArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt (repeat for several; all run batched).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A JSON file holding an array of prompts, each a string, an array of token ids
    /// (e.g. `["Hello", [1, 2, 3]]`: ids go to the model as they are, untokenized), or an
    /// object `{"prompt": ..., "priority": 1, "tenant": "a", "deadline_ms": 500}` (all but
    /// `prompt` optional).
    #[arg(long)]
    prompts_file: Option<std::path::PathBuf>,
    /// Who goes first: fcfs, priority (lower value first), fair (tenants share tokens by
    /// weight) or qos (overdue first, then tenants by weight, then priority).
    #[arg(long, default_value = "fcfs")]
    scheduling_policy: String,
    /// A tenant's weight under fair and qos, as NAME=WEIGHT (repeatable; others weigh 1).
    #[arg(long = "tenant-weight", value_parser = parse_tenant_weight)]
    tenant_weights: Vec<(String, f64)>,
    /// Print what each step scheduled, preempted and swapped, and the free blocks, as a table
    /// on stderr (stdout keeps the completions or the --json array).
    #[arg(long)]
    stats: bool,
    /// Write each rank's communicator counters and the step broadcast's bytes to this JSON
    /// file (with --tp or --pp; under `lab launch`, rank 0 writes it).
    #[arg(long)]
    comm_stats_json: Option<std::path::PathBuf>,
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
    /// Generate at least this many tokens: until then EOS and the stop token ids cannot be
    /// sampled (vLLM's min_tokens; at most --max-tokens).
    #[arg(long, default_value_t = 0)]
    min_tokens: usize,
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
    /// A prompt with its scheduling fields.
    Request(RequestItem),
}

/// `{"prompt": ..., "priority": .., "tenant": .., "deadline_ms": ..}` in `--prompts-file`.
#[derive(serde::Deserialize, serde::Serialize, Clone)]
#[serde(deny_unknown_fields)]
struct RequestItem {
    prompt: Box<PromptItem>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    deadline_ms: Option<u64>,
}

impl PromptItem {
    /// The text or ids, and the request's scheduling fields set on `params`.
    fn split(&self, params: &SamplingParams) -> anyhow::Result<(PromptItem, SamplingParams)> {
        match self {
            PromptItem::Request(r) => {
                if matches!(*r.prompt, PromptItem::Request(_)) {
                    bail!("--prompts-file: a \"prompt\" must be a string or token ids");
                }
                let params = SamplingParams {
                    priority: r.priority,
                    tenant: r.tenant.clone(),
                    deadline: r.deadline_ms.map(std::time::Duration::from_millis),
                    ..params.clone()
                };
                Ok(((*r.prompt).clone(), params))
            }
            other => Ok((other.clone(), params.clone())),
        }
    }
}

pub(crate) fn parse_tenant_weight(s: &str) -> Result<(String, f64), String> {
    let (name, weight) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=WEIGHT"))?;
    let weight: f64 = weight
        .parse()
        .ok()
        .filter(|w: &f64| w.is_finite() && *w > 0.0)
        .ok_or_else(|| format!("{weight:?} is not a positive number"))?;
    Ok((name.to_string(), weight))
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
    let policy = policy_from_name(&args.scheduling_policy, &args.tenant_weights)?;
    if !args.tenant_weights.is_empty() && !matches!(policy.name(), "fair" | "qos") {
        bail!("--tenant-weight applies to --scheduling-policy fair or qos");
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE");
    }
    if args.chat {
        if let Some(i) = prompts.iter().position(|p| match p {
            PromptItem::Request(r) => matches!(*r.prompt, PromptItem::TokenIds(_)),
            other => matches!(other, PromptItem::TokenIds(_)),
        }) {
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
        min_tokens: args.min_tokens,
        output_logits: args.logit_margins,
        ..SamplingParams::default()
    };
    params.validate()?; // before loading the model
    let (prompts, request_params): (Vec<PromptItem>, Vec<SamplingParams>) = prompts
        .iter()
        .map(|p| p.split(&params))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let parts = EngineParts {
        policy,
        ..EngineParts::default()
    };
    let mut config = args.model.engine_config();
    if crate::launch::serve_if_worker(&args.model, &mut config, &parts)? {
        return Ok(()); // a rank other than 0 of `lab launch`: it served rank 0
    }
    let mut llm = LLM::with_parts(args.model.load()?, config, parts)?;
    llm.engine.record_step_stats = args.stats;
    // What the engine is given: with --chat, each text wrapped in the template.
    let inputs: Vec<PromptItem> = prompts
        .iter()
        .map(|p| match p {
            PromptItem::Text(t) if args.chat => llm.chat_prompt(t).map(PromptItem::Text),
            other => Ok(other.clone()),
        })
        .collect::<Result<_, _>>()?;
    let requests = inputs
        .iter()
        .zip(request_params)
        .map(|(p, params)| match p {
            PromptItem::Text(t) => (Prompt::Text(t.clone()), params),
            PromptItem::TokenIds(ids) => (Prompt::TokenIds(ids.clone()), params),
            PromptItem::Request(_) => unreachable!("split above"),
        })
        .collect();
    let outputs = llm.generate_requests(requests)?;
    if let Some(path) = &args.comm_stats_json {
        crate::launch::write_comm_stats(path, &mut llm.engine)?;
    }
    if args.stats {
        eprint!(
            "{}",
            step_stats::table(&llm.engine.step_stats, &llm.engine.stats)
        );
    }
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
                PromptItem::Request(_) => unreachable!("split above"),
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
