//! The HTTP server (vLLM's `api_server.py`): routes, and the endpoints that are not
//! generation: `GET /health`, `GET /v1/models`, `GET /metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::protocol::ApiError;
use super::serving_chat::create_chat_completion;
use super::serving_completion::create_completion;
use super::serving_engine::{error_response, json_response, OpenAIServing};
use crate::entrypoints::async_llm_engine::{lock, EngineStatus};

/// Every route of the server.
pub fn router(serving: Arc<OpenAIServing>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/v1/completions", post(create_completion))
        .route("/v1/chat/completions", post(create_chat_completion))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(serving)
}

/// Connections the kernel completes and holds for the server before it accepts them (the
/// listen backlog). tokio's own `bind` (through mio) asks for 128, as the standard library
/// does, and on the H200 machine (2026-12-02) a burst of 1000 clients (`lab bench-serve
/// --num-requests 1000`) overflowed it while the server accepted: the kernel dropped
/// handshakes and fell back to SYN cookies, some of which failed, and 1-77 clients of a burst
/// got "Connection reset by peer" before their request reached the engine. 4096 is Linux's
/// default cap (`net.core.somaxconn`); the kernel lowers a larger request to the cap.
pub const LISTEN_BACKLOG: u32 = 4096;

// ANCHOR: bind
/// Listens on `addr` (host:port; port 0 picks a free one) with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As tokio's `bind` does on Unix: a restarted server may take its port back while the
        // previous one's connections are still in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}
// ANCHOR_END: bind

/// Serves `router` on `listener` until the future ends (it never does on its own).
pub async fn serve(
    listener: tokio::net::TcpListener,
    serving: Arc<OpenAIServing>,
) -> std::io::Result<()> {
    axum::serve(listener, router(serving)).await
}

/// 200 once the model is loaded, 503 while it loads, 500 if the engine failed.
async fn health(State(serving): State<Arc<OpenAIServing>>) -> Response {
    match serving.ready() {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn models(State(serving): State<Arc<OpenAIServing>>) -> Response {
    match serving.ready() {
        Ok(info) => json_response(
            StatusCode::OK,
            &json!({
                "object": "list",
                "data": [{
                    "id": serving.model_name,
                    "object": "model",
                    "created": serving.created,
                    "owned_by": "inference-lab",
                    "root": serving.model_name,
                    "parent": null,
                    "max_model_len": info.max_model_len,
                }],
            }),
        ),
        Err(e) => error_response(&e),
    }
}

/// Prometheus' text format (also while loading: the gauges are zero then).
async fn metrics(State(serving): State<Arc<OpenAIServing>>) -> Response {
    let text = lock(&serving.engine.shared.metrics).render(&serving.model_name);
    let status = match serving.engine.shared.status() {
        EngineStatus::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(&ApiError::new(404, format!("no route {}", uri.path())))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(&ApiError::new(
        405,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}
