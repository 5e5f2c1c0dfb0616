//! The server answers while the model loads: 503 with OpenAI's error body on every endpoint,
//! then 200 once the engine is up. Run in this process, with a load that waits for the test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::entrypoints::async_llm_engine::{EngineHandle, LoopOptions};
use engine::entrypoints::http_client::HttpClient;
use engine::entrypoints::openai::api_server;
use engine::entrypoints::openai::serving_engine::OpenAIServing;
use engine::model_source::{load_model, ModelSpec, DEFAULT_WEIGHT_SEED};
use engine::{EngineConfig, LLMEngine};
use serde_json::json;

#[test]
fn requests_get_503_while_the_model_loads_then_200() {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let load = move || {
        wait.recv().ok(); // the model "loads" until the test says so
        let model = load_model(&ModelSpec::parse("tiny"), false, DEFAULT_WEIGHT_SEED)?;
        let mut config = EngineConfig::default();
        config.device = engine::config::Device::Cpu;
        config.cache.num_kv_blocks = Some(32);
        LLMEngine::new(model, config)
    };
    let (handle, loaded) = EngineHandle::spawn(load, LoopOptions::default()).unwrap();
    let serving = Arc::new(OpenAIServing::new(handle, "tiny".into()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(api_server::serve(listener, serving));
    let client = HttpClient::new(&url).unwrap();

    let health = client.get("/health").unwrap();
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["error"]["type"], "ServiceUnavailableError");
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let body = json!({"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]});
        let r = client.post(path, &body.to_string()).unwrap();
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loading"));
    }
    assert_eq!(client.get("/v1/models").unwrap().status, 503);
    // Bad input is still a 400 while loading: the body is checked first.
    assert_eq!(client.post("/v1/completions", "{").unwrap().status, 400);
    assert_eq!(client.get("/metrics").unwrap().status, 200);

    go.send(()).unwrap();
    assert_eq!(runtime.block_on(loaded).unwrap(), Ok(()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/health").unwrap().status != 200 {
        assert!(Instant::now() < deadline, "never became healthy");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = client
        .post(
            "/v1/completions",
            &json!({"prompt": "Hi", "max_tokens": 3}).to_string(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
}
