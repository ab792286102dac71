//! `janitor serve`: the small HTTP intake schedulers call when they skip a run.
//!
//! `GET /healthz` answers while the process is up. `POST /api/v1/skip` with
//! `{"execution_id": "…", "agent": "…"?}` enqueues the run's finalize job (as `janitor skip`).
//! Mutating endpoints need `Authorization: Bearer $JANITOR_ADMIN_TOKEN`; without a token
//! configured they are disabled, not open. Bad requests get a 4xx with a JSON error.

use std::sync::Arc;

use axum::extract::{rejection::JsonRejection, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use janitor_core::{AgentName, ExecutionId, Policy};
use janitor_producer::{enqueue_skip, SkipError};
use janitor_queue::Queue;
use janitor_store::{ExecutionStore, SlotStore};
use serde::Deserialize;
use serde_json::json;

use crate::cli::ServeArgs;
use crate::{context, settings::Settings};

struct App {
    slots: SlotStore,
    rows: ExecutionStore,
    queue: Queue,
    policy: Policy,
    token: Option<String>,
}

pub async fn run(settings: &Settings, args: &ServeArgs) -> anyhow::Result<()> {
    let slots = context::slot_store(settings).await?;
    let rows = context::execution_store(settings).await?;
    let queue = context::queue(settings, &slots);
    let app = Arc::new(App {
        slots,
        rows,
        queue,
        policy: settings.policy,
        token: settings.admin_token.clone(),
    });
    if app.token.is_none() {
        tracing::warn!("JANITOR_ADMIN_TOKEN is not set: mutating endpoints are disabled");
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(app))
        .with_graceful_shutdown(context::shutdown_signal())
        .await?;
    Ok(())
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/skip", post(skip))
        .with_state(app)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipRequest {
    execution_id: String,
    agent: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn skip(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<SkipRequest>, JsonRejection>,
) -> Response {
    let Some(token) = app.token.as_deref() else {
        return error(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: set JANITOR_ADMIN_TOKEN",
        );
    };
    let offered = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if offered != Some(token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let execution = match ExecutionId::parse(request.execution_id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("execution_id: {e}")),
    };
    let agent = match request.agent.map(AgentName::parse).transpose() {
        Ok(agent) => agent,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("agent: {e}")),
    };
    match enqueue_skip(
        &app.queue,
        &app.slots,
        &app.rows,
        &app.policy,
        &execution,
        agent.as_ref(),
    )
    .await
    {
        Ok(receipt) => (StatusCode::ACCEPTED, Json(receipt)).into_response(),
        Err(e @ SkipError::UnknownExecution(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ (SkipError::NotSkipped { .. } | SkipError::Corrupt(..))) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "skip intake failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}
