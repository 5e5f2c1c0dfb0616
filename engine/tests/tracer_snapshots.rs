//! The tracer on a fixed tiny run (the tiny model, two tensor-parallel ranks, one greedy
//! request of two tokens): the trace's structure, times left out, is snapshotted with `insta`
//! (`cargo insta review` after an intended change, or `INSTA_UPDATE=always`), and the Chrome
//! trace is checked against the Trace Event Format.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use engine::config::Device;
use engine::model_source::{load_model, ModelSpec};
use engine::tracer::{chrome_trace, RecordedSpan, SpanRecorder};
use engine::{EngineConfig, SamplingParams, LLM};
use serde_json::Value;

/// The run's spans (after loading) and threads, recorded once for every test of this file:
/// a process has one global subscriber. The engine runs on a thread named `engine`, so that
/// names do not depend on which test came first.
fn run() -> &'static (Vec<RecordedSpan>, Vec<String>) {
    static RUN: OnceLock<(Vec<RecordedSpan>, Vec<String>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let recorder = SpanRecorder::default();
        tracing::subscriber::set_global_default(recorder.clone()).unwrap();
        let engine = std::thread::Builder::new().name("engine".into());
        let r = recorder.clone();
        engine
            .spawn(move || {
                let mut config = EngineConfig {
                    device: Device::Cpu,
                    ..EngineConfig::default()
                };
                config.parallel.tensor_parallel_size = 2;
                let model = load_model(&ModelSpec::Tiny, false, 0).unwrap();
                let mut llm = LLM::new(model, config).unwrap();
                let loaded = r.spans().0.len();
                let out = llm
                    .generate(&["hello"], &SamplingParams::greedy(2))
                    .unwrap();
                assert_eq!(out[0].token_ids.len(), 2);
                drop(llm); // the ranks' threads end: every span is closed
                r.spans_since(loaded)
            })
            .unwrap()
            .join()
            .unwrap()
    })
}

/// Each thread's spans as an indented tree: name and fields, no times.
fn structure(spans: &[RecordedSpan], threads: &[String]) -> String {
    let mut by_thread: BTreeMap<&str, String> = BTreeMap::new();
    for s in spans {
        let mut depth = 0;
        let mut p = s.parent;
        while let Some(j) = p {
            depth += 1;
            p = spans[j].parent;
        }
        let fields: Vec<String> = s.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        let text = by_thread.entry(threads[s.thread].as_str()).or_default();
        text.push_str(&format!(
            "{}{}{}\n",
            "  ".repeat(depth),
            s.name,
            fields.concat()
        ));
    }
    by_thread
        .into_iter()
        .map(|(t, text)| format!("== thread {t}\n{text}"))
        .collect()
}

#[test]
fn the_traces_structure() {
    let (spans, threads) = run();
    insta::assert_snapshot!(structure(spans, threads));
}

/// The engine thread's events of the Chrome trace, their times redacted.
#[test]
fn the_chrome_trace_of_the_engine_thread() {
    let (spans, threads) = run();
    let trace = chrome_trace(spans, threads);
    let engine_tid = threads.iter().position(|t| t == "engine").unwrap();
    let mut events: Vec<&Value> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tid"] == engine_tid || e["ph"] == "M")
        .collect();
    // Threads are numbered as they first open a span, and the ranks race to it: metadata
    // events in the order of the threads' names.
    events.sort_by_key(|e| {
        (
            e["ph"] != "M",
            e["args"]["name"].as_str().map(str::to_string),
        )
    });
    insta::assert_json_snapshot!(events, {
        "[].ts" => "[ts]",
        "[].dur" => "[dur]",
        "[].tid" => "[tid]",
    });
}

/// The Trace Event Format (the document Chrome's and Perfetto's importers follow): every event
/// has `name`, `ph`, `pid` and `tid`; a complete event (`X`) also a non-negative `ts` and
/// `dur` in microseconds; metadata events (`M`) name each thread; and on one thread complete
/// events nest properly (sorted by start, each one ends before the one it opened inside).
#[test]
fn the_chrome_trace_follows_the_trace_event_format() {
    let (spans, threads) = run();
    let trace = chrome_trace(spans, threads);
    assert_eq!(trace["displayTimeUnit"], "ms");
    let events = trace["traceEvents"].as_array().unwrap();
    let mut named = BTreeMap::new();
    let mut per_thread: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for e in events {
        for key in ["name", "ph", "pid", "tid"] {
            assert!(!e[key].is_null(), "event without {key}: {e}");
        }
        assert!(
            e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
        let tid = e["tid"].as_u64().unwrap();
        match e["ph"].as_str().unwrap() {
            "M" => {
                assert_eq!(e["name"], "thread_name", "{e}");
                let name = e["args"]["name"].as_str().expect("a thread's name");
                assert!(
                    named.insert(tid, name.to_string()).is_none(),
                    "tid {tid} named twice"
                );
            }
            "X" => {
                let ts = e["ts"].as_f64().expect("ts in µs");
                let dur = e["dur"].as_f64().expect("a complete event's dur");
                assert!(ts >= 0.0 && dur >= 0.0, "{e}");
                assert!(e["args"].is_object(), "{e}");
                per_thread.entry(tid).or_default().push((ts, ts + dur));
            }
            other => panic!("an event of phase {other}: {e}"),
        }
    }
    assert_eq!(named.len(), threads.len());
    for (tid, mut intervals) in per_thread {
        assert!(
            named.contains_key(&tid),
            "events on an unnamed thread {tid}"
        );
        // Sorted by start (longest first on a tie), the open events form a stack: each new
        // event starts after the innermost open one ends (a sibling) or ends inside it (a
        // child); one that starts inside and ends outside would draw overlapping bars.
        intervals.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut open: Vec<f64> = Vec::new();
        for (start, end) in intervals {
            while open.last().is_some_and(|&top| top <= start) {
                open.pop();
            }
            if let Some(&top) = open.last() {
                // (1 ns of slack: ts + dur is summed in floating point.)
                assert!(
                    end <= top + 1e-3,
                    "thread {tid}: [{start}, {end}] crosses its parent's end {top}"
                );
            }
            open.push(end);
        }
    }
    // The engine thread and both ranks' threads ran spans.
    let with_events: Vec<&str> = named.values().map(String::as_str).collect();
    for t in ["engine", "tp-rank-0", "tp-rank-1"] {
        assert!(with_events.contains(&t), "{with_events:?}");
    }
}
