//! `janitor serve`: the admin HTTP server (also started by `janitor run`).
//!
//! `GET /healthz` answers while the process is up; `GET /readyz` answers 200 only while
//! Redis and the database both answer (503 with the failing one otherwise). `POST /api/v1/skip` with
//! `{"execution_id": "…", "agent": "…"?}` enqueues the run's finalize job (as `janitor skip`).
//! Mutating endpoints need `Authorization: Bearer $JANITOR_ADMIN_TOKEN`; without a token
//! configured they are disabled, not open. Bad requests get a 4xx with a JSON error.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

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
    let listener = bind(args.listen).await?;
    serve(
        settings,
        listener,
        slots,
        rows,
        queue,
        context::shutdown_signal(),
    )
    .await
}

/// Binds the admin address and says where it listens (port 0 picks a free one).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    tracing::info!(addr = %local, "admin HTTP listening");
    Ok(listener)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    settings: &Settings,
    listener: tokio::net::TcpListener,
    slots: SlotStore,
    rows: ExecutionStore,
    queue: Queue,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/v1/skip", post(skip))
        .with_state(app)
}

/// 200 when both stores answer within a second; 503 naming each one that did not.
async fn ready(State(app): State<Arc<App>>) -> Response {
    let limit = std::time::Duration::from_secs(1);
    let (redis, database) = tokio::join!(
        tokio::time::timeout(limit, app.slots.server_time()),
        tokio::time::timeout(limit, app.rows.database().ping()),
    );
    let verdict = |r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => json!("ok"),
        Ok(Err(e)) => json!(e),
        Err(_) => json!("timed out"),
    };
    let redis = verdict(redis.map(|r| r.map(drop).map_err(|e| e.to_string())));
    let database = verdict(database.map(|r| r.map_err(|e| e.to_string())));
    let status = if redis == "ok" && database == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "redis": redis, "database": database })),
    )
        .into_response()
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
