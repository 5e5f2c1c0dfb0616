//! `lab serve` over real HTTP on a free loopback port, with the tiny model: the answers equal
//! `lab generate`'s token for token, streams concatenate to the whole text, many clients at once
//! all finish, clients that go away free their blocks, and bad requests get clear 4xx errors
//! while the server keeps serving.

mod serve_common;

use serde_json::json;
use serve_common::{ids, lab_generate, stream, Server};

const PROMPTS: [&str; 3] = ["Hello", "The capital of France is", "héllo wörld 🎉"];

#[test]
fn greedy_completions_equal_lab_generate_token_for_token() {
    let server = Server::start(&[]);
    let mut args = vec!["--max-tokens", "12", "--temperature", "0", "--ignore-eos"];
    for p in PROMPTS {
        args.extend(["--prompt", p]);
    }
    let expected = lab_generate(&args);
    for (prompt, want) in PROMPTS.iter().zip(&expected) {
        let body = json!({
            "model": "tiny", "prompt": prompt, "max_tokens": 12, "temperature": 0,
            "ignore_eos": true, "return_token_ids": true,
        });
        let r = server.post("/v1/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["object"], "text_completion");
        let choice = &v["choices"][0];
        assert_eq!(
            ids(&choice["token_ids"]),
            ids(&want["token_ids"]),
            "{prompt}"
        );
        assert_eq!(
            ids(&choice["prompt_token_ids"]),
            ids(&want["prompt_token_ids"])
        );
        assert_eq!(choice["finish_reason"], "length");
        let prompt_len = want["prompt_token_ids"].as_array().unwrap().len();
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": prompt_len, "completion_tokens": 12, "total_tokens": prompt_len + 12})
        );
        // The same request streamed: the same tokens, the same text.
        let mut body = body;
        body["stream"] = json!(true);
        let s = stream(&server, "/v1/completions", &body);
        assert!(s.done);
        assert_eq!(s.token_ids[0], ids(&want["token_ids"]));
        assert_eq!(s.text(0), choice["text"].as_str().unwrap());
    }
}

#[test]
fn chat_and_seeded_sampling_equal_lab_generate() {
    let server = Server::start(&[]);
    let chat = lab_generate(&[
        "--chat",
        "--prompt",
        "Hi there",
        "--max-tokens",
        "10",
        "--temperature",
        "0",
        "--ignore-eos",
    ]);
    let body = json!({
        "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 10,
        "temperature": 0, "ignore_eos": true, "return_token_ids": true,
    });
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        ids(&v["choices"][0]["token_ids"]),
        ids(&chat[0]["token_ids"])
    );
    assert_eq!(
        ids(&v["prompt_token_ids"]),
        ids(&chat[0]["prompt_token_ids"])
    );
    // Content given as parts reads the same.
    let parts = json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
        "max_tokens": 10, "temperature": 0, "ignore_eos": true, "return_token_ids": true,
    });
    let r = server.post("/v1/chat/completions", &parts);
    assert_eq!(
        ids(&r.json()["choices"][0]["token_ids"]),
        ids(&chat[0]["token_ids"])
    );
    // Streamed chat: the role first, then pieces that add up to the message.
    let mut body = body;
    body["stream"] = json!(true);
    let s = stream(&server, "/v1/chat/completions", &body);
    assert_eq!(s.chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(s.chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(
        s.text(0),
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(s.token_ids[0], ids(&chat[0]["token_ids"]));

    // Seeded sampling: the seed makes the draws a function of (seed, position), here as there.
    let sampled = lab_generate(&[
        "--prompt",
        "Hello",
        "--max-tokens",
        "16",
        "--temperature",
        "0.9",
        "--top-k",
        "50",
        "--top-p",
        "0.95",
        "--seed",
        "1234",
        "--ignore-eos",
    ]);
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 16, "temperature": 0.9, "top_k": 50,
                "top_p": 0.95, "seed": 1234, "ignore_eos": true, "return_token_ids": true}),
    );
    assert_eq!(
        ids(&r.json()["choices"][0]["token_ids"]),
        ids(&sampled[0]["token_ids"])
    );
}

#[test]
fn streams_concatenate_to_the_text_and_stop_strings_cut_both() {
    let server = Server::start(&[]);
    let mut stops_tested = 0;
    for prompt in PROMPTS {
        let body =
            json!({"prompt": prompt, "max_tokens": 40, "temperature": 0, "ignore_eos": true});
        let whole = server.post("/v1/completions", &body).json();
        let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let s = stream(&server, "/v1/completions", &streamed);
        assert_eq!(s.text(0), text, "{prompt}");
        assert_eq!(s.finish_reasons[0].as_deref(), Some("length"));
        for piece in &s.pieces[0][..s.pieces[0].len() - 1] {
            assert!(!piece.ends_with('\u{FFFD}'), "{piece:?} splits a character");
        }

        // A stop string taken from the middle of the text: both end just before it.
        let chars: Vec<char> = text.chars().collect();
        let Some(start) = (chars.len() / 3..chars.len().saturating_sub(2))
            .find(|&i| !chars[i..i + 2].contains(&'\u{FFFD}'))
        else {
            continue;
        };
        let stop: String = chars[start..start + 2].iter().collect();
        let expected = &text[..text.find(&stop).unwrap()];
        let mut with_stop = body.clone();
        with_stop["stop"] = json!(["never appears 🙂", stop]);
        let whole = server.post("/v1/completions", &with_stop).json();
        let c = &whole["choices"][0];
        assert_eq!(c["text"], expected, "stop {stop:?}");
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["stop_reason"], stop);
        with_stop["stream"] = json!(true);
        let s = stream(&server, "/v1/completions", &with_stop);
        assert_eq!(s.text(0), expected);
        assert_eq!(s.finish_reasons[0].as_deref(), Some("stop"));
        stops_tested += 1;
    }
    assert!(
        stops_tested >= 2,
        "only {stops_tested} outputs had a clean stop string"
    );
    // Requests ended by stop strings were aborted in the engine: nothing is left behind, and
    // they count as finished on a stop (twice per prompt: streamed and not), none as aborted.
    server.wait_idle();
    let stops = format!("finished_reason=\"stop\"}} {}", 2 * stops_tested);
    let m = server.metrics_when(|m| m.contains(&stops));
    assert!(m.contains(&stops), "{stops} in\n{m}");
    assert!(m.contains("finished_reason=\"abort\"} 0"), "{m}");
}

#[test]
fn n_choices_prompt_lists_and_usage_chunk() {
    let server = Server::start(&[]);
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": ["Hello", "Hi"], "n": 2, "max_tokens": 5, "temperature": 0.8,
                "seed": 7, "ignore_eos": true, "return_token_ids": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4, "2 prompts x n=2");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["token_ids"].as_array().unwrap().len(), 5);
    }
    assert_eq!(choices[2]["prompt_token_ids"].as_array().unwrap().len(), 2);
    // Token id lists work as prompts too, and name their ids as given.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": [[72, 105], [72]], "max_tokens": 2, "return_token_ids": true}),
    );
    assert_eq!(ids(&r.json()["choices"][1]["prompt_token_ids"]), vec![72]);
    // The prompt is counted once per prompt, the tokens once per choice.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5 + 2, "completion_tokens": 20, "total_tokens": 27})
    );
    // Choice i of a seeded request draws with seed + i: choice 1 is seed 8's answer.
    let alone = server.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 5, "temperature": 0.8, "seed": 8,
                "ignore_eos": true, "return_token_ids": true}),
    );
    assert_eq!(
        alone.json()["choices"][0]["token_ids"],
        choices[1]["token_ids"]
    );

    let s = stream(
        &server,
        "/v1/completions",
        &json!({"prompt": "Hello", "n": 3, "max_tokens": 4, "temperature": 1.0, "ignore_eos": true,
                "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(s.pieces.len(), 3);
    assert!(s
        .finish_reasons
        .iter()
        .all(|r| r.as_deref() == Some("length")));
    let usage = s.usage.expect("a usage chunk");
    assert_eq!(usage["completion_tokens"], 12);
    assert_eq!(usage["prompt_tokens"], 5);
    assert_eq!(s.chunks.last().unwrap()["choices"], json!([]));
}

/// The first step k >= 1 whose token is new, and that token: as a stop token id it ends the
/// greedy answer at k.
fn fresh_token(tokens: &[u32]) -> (usize, u32) {
    let k = (1..tokens.len().min(8))
        .find(|&k| !tokens[..k].contains(&tokens[k]))
        .expect("a new token before step 8");
    (k, tokens[k])
}

/// vLLM's `min_tokens`: a token that ends the greedy answer at step k (as a stop token id) is
/// kept from being sampled until min_tokens are out, on both endpoints, streamed or not, as
/// `lab generate --min-tokens` does.
#[test]
fn min_tokens_keeps_stop_tokens_out_until_it_is_reached() {
    let server = Server::start(&[]);
    let greedy = ["--max-tokens", "12", "--temperature", "0", "--ignore-eos"];
    for (path, prompt) in [
        ("/v1/completions", "Hello"),
        ("/v1/chat/completions", "Hi there"),
    ] {
        let chat = path.contains("chat");
        let lab = |extra: &[&str]| {
            let mut args = vec!["--prompt", prompt];
            args.extend(greedy);
            if chat {
                args.push("--chat");
            }
            args.extend(extra);
            ids(&lab_generate(&args)[0]["token_ids"])
        };
        let free = lab(&[]);
        let (k, t) = fresh_token(&free);
        let m = k + 4;
        let mut body = json!({"max_tokens": 12, "temperature": 0, "ignore_eos": true,
                              "stop_token_ids": [t], "return_token_ids": true});
        match chat {
            true => body["messages"] = json!([{"role": "user", "content": prompt}]),
            false => body["prompt"] = json!(prompt),
        }
        // Without min_tokens, t ends it at step k.
        let r = server.post(path, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let choice = &r.json()["choices"][0];
        assert_eq!(ids(&choice["token_ids"]), free[..=k], "{path}");
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(choice["stop_reason"], t);
        // With min_tokens m > k it goes on: no t among the first m tokens.
        body["min_tokens"] = json!(m);
        let r = server.post(path, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let got = ids(&v["choices"][0]["token_ids"]);
        let (t_s, m_s) = (t.to_string(), m.to_string());
        let want = lab(&["--stop-token-id", &t_s, "--min-tokens", &m_s]);
        assert_eq!(got, want, "{path}: HTTP and lab generate --min-tokens");
        assert!(got.len() >= m && !got[..m].contains(&t), "{path}: {got:?}");
        assert_eq!(got[..k], free[..k]);
        assert_ne!(got[k], t);
        assert_eq!(v["usage"]["completion_tokens"], got.len());
        body["stream"] = json!(true);
        let s = stream(&server, path, &body);
        assert!(s.done);
        assert_eq!(s.token_ids[0], got, "{path} streamed");
    }
}

/// `(status, error.type, error.message)` of a request that must fail.
fn error_of(server: &Server, path: &str, body: &str) -> (u16, String, String) {
    let r = server
        .client()
        .post(path, body)
        .expect("the server answers");
    let v = r.json();
    assert!(
        v["error"]["message"].is_string(),
        "{path} {body}: not an OpenAI error: {} {}",
        r.status,
        r.body
    );
    assert_eq!(v["error"]["code"], r.status);
    (
        r.status,
        v["error"]["type"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn bad_requests_get_clear_4xx_and_the_server_keeps_serving() {
    // 4 blocks of 16 tokens: a request holds at most 64 tokens.
    let server = Server::start(&["--num-kv-blocks", "4"]);
    let long_prompt = "x".repeat(100);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/completions",
            "{\"prompt\": \"Hi\"".into(),
            400,
            "not valid JSON",
        ),
        ("/v1/completions", "".into(), 400, "empty"),
        ("/v1/completions", "[1, 2]".into(), 400, "invalid request"),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "temperature": "hot"}).to_string(),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": -1}).to_string(),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 0}).to_string(),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "n": "two"}).to_string(),
            400,
            "n",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "n": 0}).to_string(),
            400,
            "n must be",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "stop": 5}).to_string(),
            400,
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "stop": [""]}).to_string(),
            400,
            "stop string is empty",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "top_p": 0}).to_string(),
            400,
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "temperature": -1}).to_string(),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "top_k": -5}).to_string(),
            400,
            "top_k",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "logprobs": 3}).to_string(),
            400,
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "min_tokens": 5, "max_tokens": 3}).to_string(),
            400,
            "min_tokens (5) is more than max_tokens (3)",
        ),
        (
            // Above completions' default max_tokens (16).
            "/v1/completions",
            json!({"prompt": "Hi", "min_tokens": 17}).to_string(),
            400,
            "min_tokens (17)",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "min_tokens": 9,
                   "max_completion_tokens": 8})
            .to_string(),
            400,
            "min_tokens (9)",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "min_tokens": -1}).to_string(),
            400,
            "min_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": 5}).to_string(),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"max_tokens": 5}).to_string(),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"prompt": ""}).to_string(),
            400,
            "empty",
        ),
        (
            "/v1/completions",
            json!({"prompt": []}).to_string(),
            400,
            "empty",
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 999999]}).to_string(),
            400,
            "vocabulary",
        ),
        (
            "/v1/completions",
            json!({"prompt": long_prompt}).to_string(),
            400,
            "maximum context length is 64",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 1_000_000_000_000u64}).to_string(),
            400,
            "maximum context length",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "model": "gpt-4"}).to_string(),
            404,
            "does not exist",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            400,
            "messages is empty",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": "Hi"}).to_string(),
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).to_string(),
            400,
            "image_url",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "tools": [{}]}).to_string(),
            400,
            "tools",
        ),
        ("/v1/nope", "{}".into(), 404, "no route"),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "priority": "high"}).to_string(),
            400,
            "priority",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "user": 7}).to_string(),
            400,
            "user",
        ),
    ];
    for (path, body, status, needle) in &cases {
        let (got, kind, message) = error_of(&server, path, body);
        assert_eq!(got, *status, "{path} {body}: {message}");
        assert!(
            message.contains(needle),
            "{path} {body}: {message:?} lacks {needle:?}"
        );
        if *status == 400 {
            assert_eq!(kind, "BadRequestError");
        }
    }
    // A field of the wrong type is named in `param`.
    let r = server
        .client()
        .post(
            "/v1/completions",
            &json!({"prompt": "Hi", "temperature": "hot"}).to_string(),
        )
        .unwrap();
    assert_eq!(r.json()["error"]["param"], "temperature");
    // So is a value out of range.
    let r = server
        .client()
        .post(
            "/v1/completions",
            &json!({"prompt": "Hi", "top_p": 1.5}).to_string(),
        )
        .unwrap();
    assert_eq!(r.json()["error"]["param"], "top_p");
    // GET on a POST route: 405, still JSON.
    let r = server.client().get("/v1/completions").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], 405);
    // Unknown fields are ignored, as OpenAI's clients send many.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 3, "user": "me", "frequency_penalty": 0, "future_field": {"x": 1}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Still serving, and nothing was left in the engine by the refusals.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 60, "ignore_eos": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 60);
    server.wait_idle();
    let models = server.client().get("/v1/models").unwrap().json();
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["max_model_len"], 64);
}

#[test]
fn a_model_that_fails_to_load_ends_the_server_with_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["serve", "--model", "/nonexistent/model-dir", "--port", "0"])
        .output()
        .expect("lab runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: cannot load the model"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn metrics_count_what_was_served() {
    let server = Server::start(&["--log-steps"]);
    // 36 tokens: two full blocks of 16, which the second and third requests find cached.
    let prompt = "Hello there, this is a longer prompt";
    for _ in 0..3 {
        let r = server.post(
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 7, "ignore_eos": true}),
        );
        assert_eq!(r.status, 200);
    }
    server.wait_idle();
    let m = server.metrics();
    let read = |n| engine::entrypoints::metrics::read_metric(&m, n).unwrap();
    assert_eq!(read("vllm:generation_tokens_total"), 21.0);
    assert_eq!(read("vllm:prompt_tokens_total"), 108.0);
    assert_eq!(read("vllm:time_to_first_token_seconds_count"), 3.0);
    assert_eq!(
        read("vllm:inter_token_latency_seconds_count"),
        18.0,
        "6 gaps a request"
    );
    assert_eq!(read("vllm:e2e_request_latency_seconds_count"), 3.0);
    assert_eq!(read("vllm:prefix_cache_queries_total"), 108.0);
    assert_eq!(
        read("vllm:prefix_cache_hits_total"),
        64.0,
        "2 requests x 2 blocks of 16"
    );
    assert!(
        m.contains("vllm:request_success_total{model_name=\"tiny\",finished_reason=\"length\"} 3")
    );
    assert!(m.contains("# TYPE vllm:time_to_first_token_seconds histogram"));
    // The step log shows each request joining the batch and leaving it (the line of the last
    // step is printed after the answer is sent: give it a moment to arrive).
    let wanted: Vec<String> = (0..3)
        .flat_map(|id| [format!("joined [{id}]"), format!("left [{id} (length)]")])
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = server.stderr();
        if wanted.iter().all(|w| log.contains(w.as_str())) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The loaded model's prompt ids for `prompt`, from a one-token request.
fn prompt_ids(server: &Server, prompt: &str) -> Vec<u32> {
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 1, "return_token_ids": true}),
    );
    ids(&r.json()["choices"][0]["prompt_token_ids"])
}

#[test]
fn sixty_four_concurrent_streams_all_finish_with_lab_generates_tokens() {
    let server = Server::start(&[]);
    let prompts: Vec<String> = (0..64).map(|i| format!("Request number {i}:")).collect();
    let file = serde_json::to_string(&prompts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompts.json");
    std::fs::write(&path, file).unwrap();
    let expected = lab_generate(&[
        "--prompts-file",
        path.to_str().unwrap(),
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--ignore-eos",
    ]);
    assert_eq!(
        prompt_ids(&server, &prompts[0]),
        ids(&expected[0]["prompt_token_ids"])
    );
    let results: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    let body = json!({"prompt": p, "max_tokens": 16, "temperature": 0, "ignore_eos": true,
                                      "stream": true, "return_token_ids": true});
                    let r = stream(server, "/v1/completions", &body);
                    assert!(r.done);
                    r.token_ids[0].clone()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (got, want)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(*got, ids(&want["token_ids"]), "request {i}");
    }
    server.wait_idle();
}

#[test]
fn clients_that_go_away_mid_stream_free_their_blocks() {
    let server = Server::start(&[]);
    let n = 32;
    std::thread::scope(|s| {
        for i in 0..n {
            let server = &server;
            s.spawn(move || {
                // Those that hang up ask for many tokens: they cannot finish before they leave.
                let max_tokens = if i % 2 == 0 { 1000 } else { 100 };
                let body = json!({"prompt": format!("Client {i} says"), "max_tokens": max_tokens,
                                  "temperature": 0, "ignore_eos": true, "stream": true});
                let mut st = server
                    .client()
                    .post_stream("/v1/completions", &body.to_string())
                    .unwrap();
                assert_eq!(st.status, 200);
                if i % 2 == 0 {
                    // Half read a few pieces and hang up.
                    for _ in 0..3 {
                        st.next_event().unwrap().expect("an event");
                    }
                    drop(st);
                } else {
                    let mut last = String::new();
                    while let Some(data) = st.next_event().unwrap() {
                        last = data;
                    }
                    assert_eq!(last, "[DONE]");
                }
            });
        }
    });
    // Every block came back, and each abandoned request was aborted, none finished.
    server.wait_idle();
    let m = server.metrics();
    assert!(m.contains("finished_reason=\"abort\"} 16"), "{m}");
    assert!(m.contains("finished_reason=\"length\"} 16"), "{m}");
    let generated =
        engine::entrypoints::metrics::read_metric(&m, "vllm:generation_tokens_total").unwrap();
    assert!(
        generated < (16 * 100 + 16 * 1000) as f64,
        "the aborted stopped early: {generated}"
    );
    // And the server still serves.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "Still there?", "max_tokens": 4}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_that_leaves_before_a_non_streaming_answer_aborts_it() {
    use std::io::Write;
    let server = Server::start(&[]);
    let addr = server.url.trim_start_matches("http://");
    let body = json!({"prompt": "Hi", "max_tokens": 4000, "ignore_eos": true}).to_string();
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Wait until it runs, then hang up without reading the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("vllm:generation_tokens_total") == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(socket);
    server.wait_idle();
    let m = server.metrics();
    assert!(m.contains("finished_reason=\"abort\"} 1"), "{m}");
    let generated =
        engine::entrypoints::metrics::read_metric(&m, "vllm:generation_tokens_total").unwrap();
    assert!(
        generated < 4000.0,
        "it was aborted, not finished: {generated}"
    );
}

#[test]
fn health_models_and_served_model_name() {
    let server = Server::start(&[
        "--served-model-name",
        "my-model",
        "--scheduling-policy",
        "fair",
        "--tenant-weight",
        "alice=2",
    ]);
    let r = server.client().get("/health").unwrap();
    assert_eq!(r.status, 200);
    let models = server.client().get("/v1/models").unwrap().json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "my-model");
    // `user` is the tenant under the fair policy; `priority` is vLLM's extra field.
    let r = server.post(
        "/v1/completions",
        &json!({"model": "my-model", "prompt": "Hi", "max_tokens": 2, "user": "alice", "priority": 1}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "my-model");
}
