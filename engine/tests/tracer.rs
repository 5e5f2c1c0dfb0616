//! The tracer's engine side on a real run: the tiny model with two tensor-parallel ranks, every
//! span recorded. The Chrome trace has the format's fields, the steps' spans nest the ops, each
//! rank's thread all-reduces, and the bottleneck table adds up; the `tracer` binary writes a
//! trace and refuses bad input in one line.

use std::process::Command;

use engine::config::Device;
use engine::model_source::{load_model, ModelSpec};
use engine::tracer::{
    bottlenecks, chrome_trace, html_timeline, measured_all_reduce, predicted_all_reduce,
    SpanRecorder,
};
use engine::{EngineConfig, SamplingParams, LLM};

#[test]
fn a_traced_tensor_parallel_run() {
    let recorder = SpanRecorder::default();
    // Global, so that the ranks' threads report too (this is the binary's only test that
    // installs a subscriber).
    tracing::subscriber::set_global_default(recorder.clone()).unwrap();
    let mut config = EngineConfig {
        device: Device::Cpu,
        ..EngineConfig::default()
    };
    config.parallel.tensor_parallel_size = 2;
    let mut llm = LLM::new(load_model(&ModelSpec::Tiny, false, 0).unwrap(), config).unwrap();
    let out = llm
        .generate(&["hello"], &SamplingParams::greedy(5))
        .unwrap();
    assert_eq!(out[0].token_ids.len(), 5);
    let (spans, threads) = recorder.spans();

    // One execute_model span per step, each with its step number, and a schedule span each.
    let steps: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "execute_model")
        .map(|s| s.fields["step"].as_str())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5"]);
    assert_eq!(spans.iter().filter(|s| s.name == "schedule").count(), 5);
    for s in &spans {
        if let (Some(a), Some(b)) = (s.start, s.end) {
            assert!(a <= b, "{} ends before it starts", s.name);
        }
    }
    // Spans from inside, keyed by request and step: the request joins (add_request), every
    // schedule span lists the batch's requests and its prefill/decode tokens, each rank's
    // worker_step carries the engine's step number, each layer has its span, and the
    // request leaves in the step that made its last token.
    let field = |name: &str, key: &str| -> Vec<String> {
        let with = spans.iter().filter(|s| s.name == name);
        with.map(|s| s.fields.get(key).cloned().unwrap_or_default())
            .collect()
    };
    assert_eq!(field("add_request", "request"), ["0"]);
    assert_eq!(field("schedule", "requests"), ["0"; 5]);
    let prompt_len = out[0].prompt_token_ids.len().to_string();
    assert_eq!(
        field("schedule", "prefill_tokens"),
        [prompt_len.as_str(), "0", "0", "0", "0"]
    );
    assert_eq!(
        field("schedule", "decode_tokens"),
        ["0", "1", "1", "1", "1"]
    );
    assert_eq!(field("schedule", "preempted"), ["0"; 5]);
    assert_eq!(field("finish_request", "request"), ["0"]);
    assert_eq!(field("finish_request", "step"), ["5"]);
    assert_eq!(field("finish_request", "output_tokens"), ["5"]);
    let mut worker_steps = field("worker_step", "step");
    worker_steps.sort();
    assert_eq!(
        worker_steps,
        ["1", "1", "2", "2", "3", "3", "4", "4", "5", "5"]
    );
    let layers = llm.engine.model_config().num_hidden_layers;
    assert_eq!(
        field("layer", "layer").len(),
        2 * 5 * layers,
        "a span per layer, step, rank"
    );
    for s in spans.iter().filter(|s| s.component() == "linear") {
        let parent = &spans[s.parent.expect("inside something")];
        assert!(
            ["layer", "worker_step"].contains(&parent.name),
            "linear inside {}",
            parent.name
        );
    }

    // Both ranks' threads all-reduce (the embedding, and after each attention and MLP block).
    let ar_threads: std::collections::BTreeSet<usize> = spans
        .iter()
        .filter(|s| s.component() == "all_reduce")
        .map(|s| s.thread)
        .collect();
    assert_eq!(
        ar_threads.len(),
        2,
        "all-reduces on threads {ar_threads:?} of {threads:?}"
    );
    // A rank's ops sit inside its rank span (a parent on the same thread).
    let linear = spans
        .iter()
        .find(|s| s.component() == "linear")
        .expect("a linear op");
    let mut p = linear.parent;
    let mut chain = Vec::new();
    while let Some(i) = p {
        chain.push(spans[i].name);
        p = spans[i].parent;
    }
    assert!(chain.contains(&"rank"), "linear's parents: {chain:?}");

    // The course's all-reduce formulas predict rank 0's counters exactly: (1 + 2 × layers)
    // all-reduces a step of tokens × hidden f32 values, and a ring sends 2(N−1)/N of each.
    let tokens: Vec<usize> = spans
        .iter()
        .filter(|s| s.name == "execute_model")
        .map(|s| s.fields["tokens"].parse().unwrap())
        .collect();
    let c = llm.engine.model_config().clone();
    let predicted = predicted_all_reduce(&tokens, c.num_hidden_layers, c.hidden_size, 4, 2);
    assert_eq!(predicted.calls, 5 * (1 + 2 * c.num_hidden_layers as u64));
    let comm = llm.engine.comm_stats();
    for (rank, stats) in comm.iter().enumerate() {
        assert_eq!(measured_all_reduce(stats), predicted, "rank {rank}");
    }

    // The bottleneck table's shares add up to one and name the model's ops.
    let rows = bottlenecks(&spans);
    let sum: f64 = rows.iter().map(|r| r.share).sum();
    assert!((sum - 1.0).abs() < 1e-9, "shares add up to {sum}");
    for op in ["linear", "all_reduce", "paged_attention_decode", "schedule"] {
        assert!(rows.iter().any(|r| r.name == op), "no {op} row in {rows:?}");
    }

    // The Chrome trace: complete events with the format's fields, and a name per thread.
    let trace = chrome_trace(&spans, &threads);
    let events = trace["traceEvents"].as_array().unwrap();
    let complete: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(!complete.is_empty());
    for e in &complete {
        for key in ["name", "cat", "ts", "dur", "pid", "tid", "args"] {
            assert!(!e[key].is_null(), "event without {key}: {e}");
        }
        assert!(e["dur"].as_f64().unwrap() >= 0.0);
        assert!((e["tid"].as_u64().unwrap() as usize) < threads.len());
    }
    let named = events.iter().filter(|e| e["ph"] == "M").count();
    assert_eq!(named, threads.len());

    // The HTML page: one lane per thread that ran spans (the engine's and each rank's), one
    // bar per recorded span with its index, and nothing fetched from anywhere.
    let html = html_timeline(&spans, &threads, "test <run>");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let lanes: Vec<&str> = html
        .split("<div class=\"lane\" data-thread=\"")
        .skip(1)
        .map(|l| &l[..l.find('"').unwrap()])
        .collect();
    let mut with_spans: Vec<&str> = spans.iter().map(|s| threads[s.thread].as_str()).collect();
    with_spans.sort();
    with_spans.dedup();
    let mut sorted = lanes.clone();
    sorted.sort();
    assert_eq!(sorted, with_spans, "one lane per thread");
    assert_eq!(
        lanes[0], threads[spans[0].thread],
        "the engine's lane first"
    );
    for rank in ["tp-rank-0", "tp-rank-1"] {
        assert!(lanes.contains(&rank), "no lane for {rank} in {lanes:?}");
    }
    let mut drawn: Vec<usize> = html
        .split("data-span=\"")
        .skip(1)
        .map(|b| b[..b.find('"').unwrap()].parse().unwrap())
        .collect();
    drawn.sort();
    let closed: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].start.is_some() && spans[i].end.is_some())
        .collect();
    assert_eq!(drawn, closed, "every recorded span drawn once");
    assert!(
        html.contains("<title>test &lt;run&gt;</title>"),
        "the title escaped"
    );
    for external in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "the page refers to {external}");
    }
    for table in ["<h2>Steps</h2>", "<h2>Where the time went</h2>"] {
        assert!(html.contains(table), "no {table}");
    }
}

#[test]
fn the_tracer_binary_writes_a_trace_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["--max-tokens", "3", "--threads", "1", "--trace-out"])
        .arg(&trace)
        .arg("--html")
        .arg(dir.path().join("trace.html"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| step |") && stdout.contains("| component |"),
        "{stdout}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert!(json["traceEvents"].as_array().unwrap().len() > 10);
    // The page draws what the Chrome trace holds: as many bars as complete events.
    let html = std::fs::read_to_string(dir.path().join("trace.html")).unwrap();
    let complete = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .count();
    assert_eq!(html.matches("<rect class=\"span\"").count(), complete);

    for args in [["--tp", "3"], ["--threads", "0"]] {
        let bad = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(args)
            .arg("--trace-out")
            .arg(&trace)
            .output()
            .unwrap();
        assert!(!bad.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.starts_with("error:") && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

/// `--workload`: three requests arriving a step apart join and leave a running batch; the
/// request table and the trace show each one's add and finish; a bad spec is one line.
#[test]
fn the_tracer_follows_a_workload() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["--tp", "2", "--workload", "3,4,3,1", "--trace-out"])
        .arg(&trace)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("3 requests, 9 output tokens"),
        "{stdout}"
    );
    assert!(
        stdout.contains("all-reduce calls and tensor bytes: measured = predicted"),
        "the formula's check says whether it holds: {stdout}"
    );
    // Request r arrives after step r, first runs in step r + 1 and makes its third token
    // two steps later.
    for r in 0..3 {
        let row = stdout
            .lines()
            .skip_while(|l| !l.starts_with("| request |"))
            .find(|l| l.starts_with(&format!("| {r} | ")))
            .unwrap_or_else(|| panic!("no row for request {r}: {stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells[3..5],
            [(r + 1).to_string(), (r + 3).to_string()],
            "{row}"
        );
        assert_eq!(cells[6], "3", "{row}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let count = |name: &str| events.iter().filter(|e| e["name"] == name).count();
    assert_eq!((count("add_request"), count("finish_request")), (3, 3));

    let bad = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["--workload", "3,4", "--trace-out"])
        .arg(&trace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.trim().lines().count() == 1,
        "{err}"
    );
}
