//! A batch of requests for the tracer to follow: how many, how long their prompts and
//! outputs, and at which step each arrives, so that the timeline shows requests joining a
//! running batch and leaving it.
//!
//! Two spellings: `N,PROMPT,OUTPUT[,EVERY]` (N requests of PROMPT prompt tokens and OUTPUT
//! output tokens, one arriving every EVERY steps, all at once when EVERY is 0 or absent), or
//! the path of a JSONL file, one request a line:
//! `{"prompt": "text" | "prompt_tokens": 16, "max_tokens": 8, "arrival_step": 3}`.

use serde::Deserialize;

use crate::llm_engine::{LLMEngine, Prompt, RequestOutput};
use crate::sampling_params::SamplingParams;

/// One request of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRequest {
    pub prompt: Prompt,
    /// Output tokens: EOS is ignored, so each request makes exactly this many.
    pub max_tokens: usize,
    /// The engine step after which it is added (0: before the first).
    pub arrival_step: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: Option<String>,
    prompt_tokens: Option<usize>,
    max_tokens: usize,
    #[serde(default)]
    arrival_step: usize,
}

/// Reads a workload: `N,PROMPT,OUTPUT[,EVERY]`, or a JSONL file's path. Prompts given as a
/// length are token ids `1..` (any ids do: the tracer times work, not text).
pub fn parse_workload(spec: &str) -> Result<Vec<WorkloadRequest>, String> {
    let numbers: Option<Vec<usize>> = spec.split(',').map(|n| n.trim().parse().ok()).collect();
    let requests = match numbers.as_deref() {
        Some(&[n, prompt, output]) => uniform(n, prompt, output, 0),
        Some(&[n, prompt, output, every]) => uniform(n, prompt, output, every),
        _ if spec.contains(',') => {
            return Err(format!(
                "--workload {spec:?}: expected N,PROMPT,OUTPUT[,EVERY] (numbers) or a JSONL file"
            ))
        }
        _ => {
            let text = std::fs::read_to_string(spec)
                .map_err(|e| format!("--workload {spec}: cannot read it: {e}"))?;
            let mut requests = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let at = || format!("--workload {spec}, line {}", i + 1);
                let l: Line = serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
                let prompt = match (l.prompt, l.prompt_tokens) {
                    (Some(text), None) => Prompt::Text(text),
                    (None, Some(n)) => token_prompt(n),
                    _ => return Err(format!("{}: give prompt or prompt_tokens", at())),
                };
                requests.push(WorkloadRequest {
                    prompt,
                    max_tokens: l.max_tokens,
                    arrival_step: l.arrival_step,
                });
            }
            requests
        }
    };
    if requests.is_empty() {
        return Err(format!("--workload {spec}: no requests"));
    }
    if let Some(r) = requests.iter().find(|r| r.max_tokens == 0) {
        return Err(format!(
            "--workload {spec}: a request with max_tokens 0: {r:?}"
        ));
    }
    Ok(requests)
}

fn uniform(n: usize, prompt: usize, output: usize, every: usize) -> Vec<WorkloadRequest> {
    (0..n)
        .map(|i| WorkloadRequest {
            prompt: token_prompt(prompt),
            max_tokens: output,
            arrival_step: i * every,
        })
        .collect()
}

/// A prompt of `n` token ids (an empty one, for `n = 0`, is refused by the engine).
fn token_prompt(n: usize) -> Prompt {
    Prompt::TokenIds((1..=n as u32).collect())
}

/// Runs `requests` on `engine`: each is added once the engine has made its `arrival_step`
/// steps, and the engine steps until all are done. Returns the outputs in request order.
pub fn run_workload(
    engine: &mut LLMEngine,
    requests: &[WorkloadRequest],
) -> crate::error::Result<Vec<RequestOutput>> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| requests[i].arrival_step);
    let (mut next, mut steps) = (0, 0);
    let mut ids = vec![None; requests.len()];
    let mut outputs = Vec::new();
    while next < order.len() || engine.has_unfinished_requests() {
        while next < order.len() && requests[order[next]].arrival_step <= steps {
            let r = &requests[order[next]];
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(r.max_tokens)
            };
            ids[order[next]] = Some(engine.add_request(r.prompt.clone(), params)?);
            next += 1;
        }
        outputs.extend(engine.step()?);
        steps += 1;
    }
    let position = |o: &RequestOutput| ids.iter().position(|&id| id == Some(o.request_id));
    outputs.sort_by_key(position);
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_and_bad_ones() {
        let w = parse_workload("3,4,2,5").unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[2].arrival_step, 10);
        assert_eq!(w[0].prompt, Prompt::TokenIds(vec![1, 2, 3, 4]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"hi\", \"max_tokens\": 3}\n\n{\"prompt_tokens\": 2, \"max_tokens\": 1, \"arrival_step\": 4}\n",
        )
        .unwrap();
        let w = parse_workload(path.to_str().unwrap()).unwrap();
        assert_eq!(w[0].prompt, Prompt::Text("hi".into()));
        assert_eq!((w[1].max_tokens, w[1].arrival_step), (1, 4));
        for bad in ["3,4", "a,b,c", "0,4,2", "2,4,0", "/no/such/file"] {
            assert!(parse_workload(bad).is_err(), "{bad}");
        }
        std::fs::write(&path, "{\"max_tokens\": 3}\n").unwrap();
        assert!(parse_workload(path.to_str().unwrap()).is_err());
    }
}
