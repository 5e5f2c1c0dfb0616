//! What the `lab serve` tests share: a server on a free loopback port, stopped on drop, and
//! the `lab generate` runs its answers are compared with.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::entrypoints::http_client::{HttpClient, HttpResponse};
use serde_json::Value;

/// `lab serve` in a child process; killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    /// What it printed on stderr so far.
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// `lab serve --model tiny --device cpu --port 0 <extra>`, once `/health` answers 200.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_model("tiny", extra)
    }

    /// [`Server::start`] with another model (a name or a directory).
    pub fn start_model(model: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["serve", "--model", model, "--device", "cpu", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lab serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut first)
            .expect("lab serve prints its address");
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let server = Server { child, url, stderr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match server.client().get("/health") {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() > deadline => {
                    panic!("the server never got healthy: {}", server.stderr())
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        server
    }

    pub fn client(&self) -> HttpClient {
        let mut c = HttpClient::new(&self.url).expect("a valid URL");
        c.timeout = Duration::from_secs(60);
        c
    }

    pub fn post(&self, path: &str, body: &Value) -> HttpResponse {
        self.client()
            .post(path, &body.to_string())
            .expect("the server answers")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        let r = self.client().get("/metrics").expect("metrics answer");
        assert_eq!(r.status, 200);
        r.body
    }

    /// `/metrics` once `settled` holds of it, or as it is after 10 s (the caller asserts). A
    /// count that comes after the engine is idle needs this: a request the engine finished on
    /// its length becomes a stop when its handler's stop-string abort arrives, and the handler
    /// may have answered its client before the engine's loop has read that abort.
    pub fn metrics_when(&self, settled: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics();
            if settled(&text) || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One series' value in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        engine::entrypoints::metrics::read_metric(&text, name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Waits until the engine holds no request and no KV block (or fails after 30 s).
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.metrics();
            let read = |n| engine::entrypoints::metrics::read_metric(&text, n).unwrap();
            let busy = read("vllm:num_requests_running")
                + read("vllm:num_requests_waiting")
                + read("vllm:num_requests_swapped")
                + read("lab:kv_cache_blocks_used");
            if busy == 0.0 {
                assert_eq!(read("vllm:kv_cache_usage_perc"), 0.0);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the engine never emptied:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr();
        if !std::thread::panicking() {
            assert!(
                !stderr.contains("panicked"),
                "the server panicked:\n{stderr}"
            );
        }
    }
}

/// One streamed response: each choice's text pieces and token ids, the finish reasons, the
/// usage chunk if any, and whether `[DONE]` ended it.
#[derive(Debug, Default)]
pub struct Streamed {
    pub pieces: Vec<Vec<String>>,
    pub token_ids: Vec<Vec<u32>>,
    pub finish_reasons: Vec<Option<String>>,
    pub usage: Option<Value>,
    pub done: bool,
    pub chunks: Vec<Value>,
}

impl Streamed {
    pub fn text(&self, choice: usize) -> String {
        self.pieces[choice].concat()
    }
}

/// POSTs a streaming request and reads every event (`chat` reads `delta.content`).
pub fn stream(server: &Server, path: &str, body: &Value) -> Streamed {
    let mut s = server
        .client()
        .post_stream(path, &body.to_string())
        .expect("the server answers");
    assert_eq!(s.status, 200);
    assert_eq!(s.content_type, "text/event-stream");
    let mut out = Streamed::default();
    while let Some(data) = s.next_event().expect("events arrive") {
        if data == "[DONE]" {
            out.done = true;
            assert!(s.next_event().unwrap().is_none(), "nothing after [DONE]");
            break;
        }
        let chunk: Value = serde_json::from_str(&data).expect("each event is JSON");
        assert!(chunk.get("error").is_none(), "error mid-stream: {chunk}");
        if !chunk["usage"].is_null() {
            out.usage = Some(chunk["usage"].clone());
        }
        for c in chunk["choices"].as_array().expect("choices") {
            let i = c["index"].as_u64().unwrap() as usize;
            if out.pieces.len() <= i {
                out.pieces.resize(i + 1, Vec::new());
                out.token_ids.resize(i + 1, Vec::new());
                out.finish_reasons.resize(i + 1, None);
            }
            let text = c["text"].as_str().or(c["delta"]["content"].as_str());
            out.pieces[i].push(text.unwrap_or_default().to_string());
            if let Some(ids) = c["token_ids"].as_array() {
                out.token_ids[i].extend(ids.iter().map(|t| t.as_u64().unwrap() as u32));
            }
            if let Some(r) = c["finish_reason"].as_str() {
                assert!(out.finish_reasons[i].is_none(), "one finish per choice");
                out.finish_reasons[i] = Some(r.to_string());
            }
        }
        out.chunks.push(chunk);
    }
    out
}

/// `lab generate --model tiny --device cpu --json <args>`: one object per prompt.
pub fn lab_generate(args: &[&str]) -> Vec<Value> {
    lab_generate_model("tiny", args)
}

/// [`lab_generate`] with another model.
pub fn lab_generate_model(model: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["generate", "--model", model, "--device", "cpu", "--json"])
        .args(args)
        .output()
        .expect("lab runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON array");
    v.as_array().unwrap().clone()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}
