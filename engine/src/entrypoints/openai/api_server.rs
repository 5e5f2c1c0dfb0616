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
