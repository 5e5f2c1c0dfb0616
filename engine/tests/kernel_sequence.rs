//! The kernel sequence of one forward step, as the engine records it, against the book's data
//! file `book/src/stage4/forward-step-kernels.toml` (the chapter "The forward step on the GPU"
//! includes it).
//!
//! The engine runs a small random Llama (3 layers, heads of 64, so that the CUDA kernels can
//! run it too) one step at a time, and `engine::kernel_log::record` lists the `kernel` spans of
//! each step. On the CPU (CI) the list must be the file's, with each fused GPU kernel
//! replaced by the CPU ops the file's `[cpu]` table names: so this fails if the model's
//! op order changes. On a GPU (`scripts/gpu-check.sh`) the CUDA backend's list must be the
//! file's exactly, with CUDA graphs off; with them on, a replayed decode step is one
//! `cuda_graph_replay` between the step's transfer kernels. Without a GPU those tests print `skipped: ...` and pass.

use engine::config::{Device, ModelConfig};
use engine::kernel_log::{self, GRAPH_REPLAY};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

mod common;
use common::gpu::{gpu_or_skip, random_model, small_config};

/// Where the data file is, for messages.
const DATA: &str = "book/src/stage4/forward-step-kernels.toml";
/// Its text, compiled in: the GPU check carries test binaries built here to a machine where
/// the repository may sit at another path.
const DATA_TEXT: &str = include_str!("../../book/src/stage4/forward-step-kernels.toml");

/// One kind of step in the data file.
#[derive(Debug)]
struct StepKernels {
    before: Vec<String>,
    /// The first layer's kernels where they differ from `per_layer`'s.
    first_layer: Option<Vec<String>>,
    per_layer: Vec<String>,
    after: Vec<String>,
}

impl StepKernels {
    /// The whole step for a model of `layers` layers.
    fn expand(&self, layers: usize) -> Vec<String> {
        let mut all = self.before.clone();
        for layer in 0..layers {
            let ops = match &self.first_layer {
                Some(first) if layer == 0 => first,
                _ => &self.per_layer,
            };
            all.extend(ops.iter().cloned());
        }
        all.extend(self.after.iter().cloned());
        all
    }
}

/// The data file: the CUDA backend's decode and prefill steps, and the CPU's substitutions.
struct Book {
    decode: StepKernels,
    prefill: StepKernels,
    cpu: toml::Table,
}

fn strings(v: Option<&toml::Value>, what: &str) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("{DATA}: `{what}` is not a list"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{DATA}: `{what}` holds a non-string"))
                .to_string()
        })
        .collect()
}

fn book() -> Book {
    let t: toml::Table = toml::from_str(DATA_TEXT).unwrap_or_else(|e| panic!("{DATA}: {e}"));
    let step = |name: &str| {
        let s = t[name].as_table().expect("a table per kind of step");
        StepKernels {
            before: strings(s.get("before"), &format!("{name}.before")),
            first_layer: (s.get("first_layer"))
                .map(|v| strings(Some(v), &format!("{name}.first_layer"))),
            per_layer: strings(s.get("per_layer"), &format!("{name}.per_layer")),
            after: strings(s.get("after"), &format!("{name}.after")),
        }
    };
    Book {
        decode: step("decode"),
        prefill: step("prefill"),
        cpu: t["cpu"].as_table().expect("a [cpu] table").clone(),
    }
}

impl Book {
    /// The CPU backend's sequence for the GPU's `gpu`: each op the `[cpu]` table names is
    /// replaced by the ops it lists. An entry is a list, or a table `{ first = [...], then =
    /// [...] }` for an op whose CPU form differs at its first launch of the step (a fused
    /// residual add has nothing to add before the first layer); a key of several names
    /// separated by spaces replaces that run of launches (the CPU fuses what the GPU does not).
    fn on_cpu(&self, gpu: &[String]) -> Vec<String> {
        cpu_sequence(&self.cpu, gpu)
    }
}

fn cpu_sequence(cpu: &toml::Table, gpu: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    let mut rest = gpu;
    while let Some(op) = rest.first() {
        // A key of several names ("a b") replaces that run of launches as a whole.
        let run = cpu.iter().find(|(key, _)| {
            let names: Vec<&str> = key.split(' ').collect();
            names.len() > 1 && rest.iter().take(names.len()).map(String::as_str).eq(names)
        });
        if let Some((key, v)) = run {
            all.extend(strings(Some(v), &format!("cpu.\"{key}\"")));
            rest = &rest[key.split(' ').count()..];
            continue;
        }
        let first = seen.insert(op.clone());
        all.extend(match cpu.get(op) {
            Some(toml::Value::Table(t)) => {
                let which = if first { "first" } else { "then" };
                strings(t.get(which), &format!("cpu.{op}.{which}"))
            }
            Some(v) => strings(Some(v), &format!("cpu.{op}")),
            None => vec![op.clone()],
        });
        rest = &rest[1..];
    }
    all
}

/// Three layers, 4 query and 2 KV heads of 64: a shape both backends run.
fn config() -> ModelConfig {
    small_config(64)
}

fn engine(device: Device, graphs: bool) -> LLMEngine {
    let model = random_model(&config());
    let mut e = EngineConfig {
        device,
        cuda_graphs: graphs,
        // One step's kernels per `step()` call: a GPU would otherwise schedule one step ahead.
        async_scheduling: Some(false),
        ..EngineConfig::default()
    };
    e.cache.block_size = 16;
    e.cache.num_kv_blocks = Some(64);
    e.scheduler.max_num_seqs = 4;
    e.scheduler.max_num_batched_tokens = 64;
    LLMEngine::new(model, e).unwrap()
}

/// A request of `prompt_len` ids from `first` on: prompts of different `first` share no
/// block, so the prefix cache leaves a second prompt's prefill whole.
fn add(engine: &mut LLMEngine, first: u32, prompt_len: u32) {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 8,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let ids = (0..prompt_len).map(|i| 3 + (first + i * 7) % 200).collect();
    engine.add_request(Prompt::TokenIds(ids), params).unwrap();
}

/// The ops of one `engine.step()`.
fn step(engine: &mut LLMEngine) -> Vec<String> {
    let (out, ops) = kernel_log::record(|| engine.step());
    out.unwrap();
    ops
}

/// What one engine records: a prefill, a decode, a step that decodes that request while it
/// prefills a second one (a mixed batch), and a decode of both.
struct Recorded {
    prefill: Vec<String>,
    decode: Vec<String>,
    mixed: Vec<String>,
    decode_two: Vec<String>,
}

/// Prompts longer than 32 tokens: the CUDA backend runs batches of a few rows through other
/// kernels than larger ones (1-4 rows: the GEMV; 5-32 on an H100/H200: `skinny_gemm`, whose
/// gate/up launch is `linear_silu_and_mul`), and the file lists a prefill of many rows (cuBLAS).
const PROMPT: u32 = 40;

fn record(device: Device) -> Recorded {
    let mut e = engine(device, false);
    add(&mut e, 0, PROMPT);
    let prefill = step(&mut e);
    let decode = step(&mut e);
    // Not the first prompt's ids: with them the prefix cache would serve its first 32 tokens
    // and the mixed step would run 13 rows (skinny_gemm on an H100/H200), not 45.
    add(&mut e, 1, PROMPT + 4);
    let mixed = step(&mut e);
    let decode_two = step(&mut e);
    Recorded {
        prefill,
        decode,
        mixed,
        decode_two,
    }
}

fn show(what: &str, ops: &[String]) {
    eprintln!("{what} ({} ops): {}", ops.len(), ops.join(" "));
}

#[test]
fn the_cpu_backend_runs_the_books_sequence_with_its_unfused_ops() {
    let (book, layers) = (book(), config().num_hidden_layers);
    let got = record(Device::Cpu);
    show("cpu prefill", &got.prefill);
    show("cpu decode", &got.decode);
    let prefill = book.on_cpu(&book.prefill.expand(layers));
    let decode = book.on_cpu(&book.decode.expand(layers));
    assert_eq!(got.prefill, prefill, "prefill step");
    assert_eq!(got.decode, decode, "decode step");
    assert_eq!(
        got.mixed, prefill,
        "a mixed batch runs the prefill sequence"
    );
    assert_eq!(got.decode_two, decode, "a batch of two decodes");
    // The substitution is the only difference: without it the sequences differ.
    assert_ne!(got.decode, book.decode.expand(layers));
}

#[test]
fn the_cuda_backend_launches_exactly_the_books_sequence() {
    if !gpu_or_skip() {
        return;
    }
    let (book, layers) = (book(), config().num_hidden_layers);
    let got = record(Device::Cuda(0));
    show("cuda prefill", &got.prefill);
    show("cuda decode", &got.decode);
    let prefill = book.prefill.expand(layers);
    let decode = book.decode.expand(layers);
    assert_eq!(got.prefill, prefill, "prefill step");
    assert_eq!(got.decode, decode, "decode step");
    assert_eq!(
        got.mixed, prefill,
        "a mixed batch runs the prefill sequence"
    );
    assert_eq!(got.decode_two, decode, "a batch of two decodes");
}

/// With CUDA graphs on, a decode batch size's first step runs eagerly, the second is recorded
/// (its ops are seen while the graph captures them), and from the third on the whole step is
/// one graph launch between the two kernels that move the step's bytes (their arguments
/// change from step to step, so they stay outside the graph).
#[test]
fn a_replayed_decode_step_is_one_graph_launch() {
    if !gpu_or_skip() {
        return;
    }
    let (book, layers) = (book(), config().num_hidden_layers);
    let mut e = engine(Device::Cuda(0), true);
    add(&mut e, 0, PROMPT);
    assert_eq!(step(&mut e), book.prefill.expand(layers), "prefill: eager");
    let decode = book.decode.expand(layers);
    assert_eq!(step(&mut e), decode, "first decode: eager");
    assert_eq!(step(&mut e), decode, "second decode: captured");
    let replayed = ["prepare_inputs", GRAPH_REPLAY, "send_sampled_ids"];
    for k in 3..=5 {
        assert_eq!(step(&mut e), replayed, "decode {k}: replayed");
    }
}

#[test]
fn the_data_file_lists_one_attention_kernel_per_layer() {
    let book = book();
    let attention = |s: &StepKernels| {
        s.per_layer
            .iter()
            .filter(|op| op.contains("attention"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(attention(&book.decode), ["paged_attention_decode"]);
    assert_eq!(attention(&book.prefill), ["prefill_attention"]);
}

/// The `[cpu]` table's two forms: a list replaces every launch of the op, `{ first, then }`
/// its first launch in the step and the others.
#[test]
fn cpu_substitutions_replace_an_op_everywhere_or_first_and_then() {
    let cpu: toml::Table = toml::from_str(
        "fused = [\"a\", \"b\"]\nnormed = { first = [\"norm\"], then = [\"add_norm\"] }",
    )
    .unwrap();
    let gpu: Vec<String> = ["normed", "fused", "x", "normed", "fused"]
        .map(String::from)
        .into();
    assert_eq!(
        cpu_sequence(&cpu, &gpu),
        ["norm", "a", "b", "x", "add_norm", "a", "b"]
    );
}
