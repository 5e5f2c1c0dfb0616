//! Every micro-batch opens a `pp_micro_batch` span on every stage, with the step, the stage,
//! the micro-batch and its sequences: what a tracer's pipeline timeline reads. The ranks are
//! threads the engine starts, so the subscriber is the process's (this test binary's only
//! test).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use engine::distributed::pipeline_stage::MICRO_BATCH_SPAN;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Fields>>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl Subscriber for Spans {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.name() == MICRO_BATCH_SPAN
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut spans = self.0.lock().unwrap();
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        spans.push(fields);
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, _event: &Event<'_>) {}
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

#[test]
fn each_micro_batch_opens_a_span_per_stage_with_step_stage_and_micro_batch() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(spans.clone()).unwrap();
    let model = LoadedModel {
        name: "spans".into(),
        config: tiny_config(),
        weights: ModelWeights::Random { seed: 1 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut c = EngineConfig::default();
    c.cache.num_kv_blocks = Some(32);
    c.parallel.pipeline_parallel_size = 2;
    c.parallel.pipeline_micro_batches = Some(2);
    let mut engine = LLMEngine::new(model, c).unwrap();
    for p in [vec![1, 2, 3], vec![4, 5, 6, 7, 8]] {
        engine
            .add_request(Prompt::TokenIds(p), SamplingParams::greedy(1))
            .unwrap();
    }
    engine.step().unwrap();
    let mut got: Vec<(String, String, String, String)> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|f| {
            let g = |k: &str| f.get(k).cloned().unwrap_or_default();
            (g("step"), g("stage"), g("micro_batch"), g("seqs"))
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, String, String)> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .iter()
        .map(|(s, m)| ("0".into(), s.to_string(), m.to_string(), "1".into()))
        .collect();
    assert_eq!(got, want);
}
