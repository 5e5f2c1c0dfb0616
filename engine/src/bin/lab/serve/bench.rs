//! `lab bench-serve --url URL`: a load generator for a running `lab serve` (or any server with
//! OpenAI's streaming completions, vLLM's among them), after vLLM's `benchmarks/serve`.
//!
//! Each request is a prompt of random token ids and asks for exactly `--output-len` tokens
//! (`ignore_eos`), streamed. Requests go out at `--request-rate` per second (Poisson arrivals,
//! seeded) or `--concurrency` at a time, and the report gives what vLLM's serving benchmark
//! does: request and token throughput, time to first token (TTFT), time per output token after
//! the first (TPOT) and the gaps between tokens (ITL), as mean, median and 99th percentile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use engine::entrypoints::http_client::HttpClient;

use crate::nano_vllm::percentile;
use crate::py_random::PyRandom;

#[derive(Args)]
pub struct BenchServeArgs {
    /// The server, e.g. http://127.0.0.1:8000.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Requests to send.
    #[arg(long, default_value_t = 64)]
    num_requests: usize,
    /// Prompt tokens per request (random ids from 100 to 249, valid in any vocabulary of 250+).
    #[arg(long, default_value_t = 32)]
    input_len: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 32)]
    output_len: usize,
    /// Requests per second, arriving as a Poisson process (exponential gaps); without it,
    /// --concurrency requests are kept in flight.
    #[arg(long)]
    request_rate: Option<f64>,
    /// Requests in flight at once (default: all of them, with no --request-rate).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seed of the prompts and the arrival gaps.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also print one JSON line with every figure.
    #[arg(long)]
    json: bool,
}

/// What one request measured (seconds).
#[derive(Default)]
struct RequestResult {
    ttft: f64,
    /// Gaps between consecutive streamed chunks that carried tokens.
    itl: Vec<f64>,
    latency: f64,
    output_tokens: usize,
    prompt_tokens: usize,
}

fn one_request(
    client: &HttpClient,
    prompt: &[u32],
    output_len: usize,
) -> anyhow::Result<RequestResult> {
    let body = serde_json::json!({
        "prompt": prompt,
        "max_tokens": output_len,
        "temperature": 0.0,
        "ignore_eos": true,
        "stream": true,
        "return_token_ids": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let start = Instant::now();
    let mut stream = client.post_stream("/v1/completions", &body)?;
    if stream.status != 200 {
        let r = stream.read_all()?;
        bail!("HTTP {}: {}", r.status, r.body);
    }
    let mut result = RequestResult::default();
    let mut last: Option<Instant> = None;
    while let Some(data) = stream.next_event()? {
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value =
            serde_json::from_str(&data).context("a chunk is not JSON")?;
        if let Some(err) = chunk.get("error") {
            bail!("the server failed mid-stream: {err}");
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            result.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as usize;
        }
        // Our server (and vLLM's, recent) sends each chunk's token ids; a server that does not
        // is counted as vLLM's benchmark counts it, one token per chunk with text.
        let tokens: usize = chunk["choices"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| match c["token_ids"].as_array() {
                        Some(ids) => ids.len(),
                        None => usize::from(c["text"].as_str().is_some_and(|t| !t.is_empty())),
                    })
                    .sum()
            })
            .unwrap_or(0);
        if tokens == 0 {
            continue;
        }
        let now = Instant::now();
        match last {
            None => result.ttft = now.duration_since(start).as_secs_f64(),
            Some(t) => result.itl.push(now.duration_since(t).as_secs_f64()),
        }
        last = Some(now);
        result.output_tokens += tokens;
    }
    result.latency = start.elapsed().as_secs_f64();
    Ok(result)
}

/// Exponential gap with mean 1/rate, from a uniform draw.
fn exponential(rng: &mut PyRandom, rate: f64) -> f64 {
    let u = (rng.getrandbits(53) as f64 + 0.5) / (1u64 << 53) as f64;
    -u.ln() / rate
}

pub fn run(args: BenchServeArgs) -> anyhow::Result<()> {
    if args.num_requests == 0 || args.input_len == 0 || args.output_len == 0 {
        bail!("--num-requests, --input-len and --output-len must be at least 1");
    }
    if let Some(r) = args.request_rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--request-rate must be a positive number of requests per second");
        }
    }
    if args.concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    let client = HttpClient::new(&args.url)?;
    let health = client
        .get("/health")
        .with_context(|| format!("cannot reach {}", args.url))?;
    if health.status != 200 {
        bail!(
            "{} is not ready: HTTP {} {}",
            args.url,
            health.status,
            health.body
        );
    }
    let mut rng = PyRandom::new(args.seed);
    let prompts: Vec<Vec<u32>> = (0..args.num_requests)
        .map(|_| {
            (0..args.input_len)
                .map(|_| 100 + rng.randint(0, 149) as u32)
                .collect()
        })
        .collect();
    let arrivals: Vec<f64> = match args.request_rate {
        Some(rate) => {
            let mut t = 0.0;
            (0..args.num_requests)
                .map(|_| {
                    let at = t;
                    t += exponential(&mut rng, rate);
                    at
                })
                .collect()
        }
        None => vec![0.0; args.num_requests],
    };
    let concurrency = args.concurrency.unwrap_or(args.num_requests);
    eprintln!(
        "{} requests of {} prompt + {} output tokens to {}, {}",
        args.num_requests,
        args.input_len,
        args.output_len,
        args.url,
        match args.request_rate {
            Some(r) => format!("{r} requests/s (Poisson), at most {concurrency} in flight"),
            None => format!("{concurrency} in flight"),
        }
    );
    let results: Mutex<Vec<anyhow::Result<RequestResult>>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let prompts = Arc::new(prompts);
    let start = Instant::now();
    // `concurrency` workers take requests in order, each waiting for its arrival time.
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(args.num_requests) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.num_requests {
                    break;
                }
                let wait = arrivals[i] - start.elapsed().as_secs_f64();
                if wait > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                let r = one_request(&client, &prompts[i], args.output_len);
                results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            });
        }
    });
    let duration = start.elapsed().as_secs_f64();
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    let ok: Vec<RequestResult> = ok.into_iter().filter_map(Result::ok).collect();
    let failures = failure_kinds(failed.iter().filter_map(|r| r.as_ref().err()));
    if !failures.is_empty() {
        eprintln!("{} requests failed:", failed.len());
        for (message, count) in &failures {
            eprintln!("  {count} x {message}");
        }
    }
    if ok.is_empty() {
        bail!("no request completed");
    }
    let output_tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
    let prompt_tokens: usize = ok.iter().map(|r| r.prompt_tokens).sum();
    let ttft: Vec<f64> = ok.iter().map(|r| r.ttft * 1e3).collect();
    let tpot: Vec<f64> = ok
        .iter()
        .filter(|r| r.output_tokens > 1)
        .map(|r| (r.latency - r.ttft) / (r.output_tokens - 1) as f64 * 1e3)
        .collect();
    let itl: Vec<f64> = ok
        .iter()
        .flat_map(|r| r.itl.iter().map(|x| x * 1e3))
        .collect();
    let e2e: Vec<f64> = ok.iter().map(|r| r.latency * 1e3).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!("============ Serving Benchmark Result ============");
    println!("{:<40}{:>10}", "Successful requests:", ok.len());
    println!("{:<40}{:>10}", "Failed requests:", failed.len());
    println!("{:<40}{:>10.2}", "Benchmark duration (s):", duration);
    println!("{:<40}{:>10}", "Total input tokens:", prompt_tokens);
    println!("{:<40}{:>10}", "Total generated tokens:", output_tokens);
    println!(
        "{:<40}{:>10.2}",
        "Request throughput (req/s):",
        ok.len() as f64 / duration
    );
    println!(
        "{:<40}{:>10.2}",
        "Output token throughput (tok/s):",
        output_tokens as f64 / duration
    );
    println!(
        "{:<40}{:>10.2}",
        "Total token throughput (tok/s):",
        (prompt_tokens + output_tokens) as f64 / duration
    );
    for (name, v) in [
        ("Time to First Token", &ttft),
        ("Time per Output Token (excl. 1st token)", &tpot),
        ("Inter-token Latency", &itl),
        ("End-to-end Latency", &e2e),
    ] {
        let short = name.split(" (").next().unwrap_or(name);
        println!("{:-^50}", name);
        println!("{:<40}{:>10.2}", format!("Mean {short} (ms):"), mean(v));
        println!(
            "{:<40}{:>10.2}",
            format!("Median {short} (ms):"),
            percentile(v, 50.0)
        );
        println!(
            "{:<40}{:>10.2}",
            format!("P99 {short} (ms):"),
            percentile(v, 99.0)
        );
    }
    println!("{}", "=".repeat(50));
    if args.json {
        let stats = |v: &[f64]| serde_json::json!({"mean": mean(v), "median": percentile(v, 50.0), "p99": percentile(v, 99.0)});
        println!(
            "{}",
            serde_json::json!({
                "completed": ok.len(),
                "failed": failed.len(),
                "duration_s": duration,
                "total_input_tokens": prompt_tokens,
                "total_output_tokens": output_tokens,
                "request_throughput": ok.len() as f64 / duration,
                "output_throughput": output_tokens as f64 / duration,
                "ttft_ms": stats(&ttft),
                "tpot_ms": stats(&tpot),
                "itl_ms": stats(&itl),
                "e2e_latency_ms": stats(&e2e),
                "errors": failures
                    .iter()
                    .map(|(message, count)| serde_json::json!({"message": message, "count": count}))
                    .collect::<Vec<_>>(),
            })
        );
    }
    if !failed.is_empty() {
        bail!("{} of {} requests failed", failed.len(), args.num_requests);
    }
    Ok(())
}

/// The failed requests' errors, one entry per distinct message with how many requests gave
/// it, most frequent first (ties in the order first seen): a thousand clients reset by the
/// kernel and one refused by the server are two lines, not the first error alone.
fn failure_kinds<'a>(errors: impl Iterator<Item = &'a anyhow::Error>) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in errors {
        let message = format!("{e:#}");
        match kinds.iter_mut().find(|(m, _)| *m == message) {
            Some((_, count)) => *count += 1,
            None => kinds.push((message, 1)),
        }
    }
    // A stable sort keeps first-seen order among equal counts.
    kinds.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    kinds
}

#[cfg(test)]
mod tests {
    use super::failure_kinds;

    #[test]
    fn failures_are_grouped_by_message_most_frequent_first() {
        let errors = [
            anyhow::anyhow!("refused"),
            anyhow::anyhow!("Connection reset by peer").context("POST /v1/completions"),
            anyhow::anyhow!("Connection reset by peer").context("POST /v1/completions"),
            anyhow::anyhow!("timed out"),
        ];
        assert_eq!(
            failure_kinds(errors.iter()),
            vec![
                (
                    "POST /v1/completions: Connection reset by peer".to_string(),
                    2
                ),
                ("refused".to_string(), 1),
                ("timed out".to_string(), 1),
            ]
        );
        assert!(failure_kinds([].iter()).is_empty());
    }
}
