//! `janitor serve`: the admin HTTP server (also started by `janitor run`).
//!
//! `GET /healthz` answers while the process is up; `GET /readyz` answers 200 only while
//! Redis and the database both answer (503 with the failing one otherwise).
//!
//! JSON under `/api/v1/` — reads: `GET queue/stats`, `GET jobs?state=…&kind=…&cursor=…&limit=…`,
//! `GET jobs/{id}` (with its run's audit rows), `GET stuck[?actionable=true]`,
//! `GET audit?execution=…&agent=…&since=…&limit=…`; changes: `POST jobs/retry`
//! (`{"ids":[…]}` or `{"all_dead":true,"kind":…}`), `POST jobs/purge`
//! (`{"state":"done","older_than":"7d"}`), `POST sweep` (`{"force":false,"dry_run":false}`),
//! `POST skip` (`{"execution_id": "…", "agent": "…"?}`, the scheduler's hook).
//! Mutating endpoints need `Authorization: Bearer $JANITOR_ADMIN_TOKEN`; without a token
//! configured they are disabled, not open. Bad requests get a 4xx with a JSON error.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use janitor_core::{AgentName, ExecutionId, JobKind, Policy};
use janitor_producer::{enqueue_skip, SkipError};
use janitor_queue::{JobState, Queue, RetryOutcome};
use janitor_store::sql::audit::{self, AuditFilter};
use janitor_store::{ExecutionStore, SlotStore};
use serde::Deserialize;
use serde_json::json;

use crate::cli::ServeArgs;
use crate::{context, settings::Settings};

struct App {
    settings: Settings,
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
        settings: settings.clone(),
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
        .route("/api/v1/queue/stats", get(queue_stats))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/retry", post(retry))
        .route("/api/v1/jobs/purge", post(purge))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/stuck", get(stuck))
        .route("/api/v1/audit", get(audit_trail))
        .route("/api/v1/sweep", post(sweep_now))
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

/// A refused request: its status and message, answered as `{"error": …}`.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Mutating endpoints: refused (403) when no token is configured, 401 without the right one.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = app.token.as_deref() else {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: set JANITOR_ADMIN_TOKEN".into(),
        ));
    };
    let offered = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if offered != Some(token) {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ));
    }
    Ok(())
}

/// A change request: authorized, then its JSON body read.
fn command<T>(
    app: &App,
    headers: &HeaderMap,
    body: Result<Json<T>, JsonRejection>,
) -> Result<T, Refusal> {
    authorize(app, headers)?;
    body.map(|Json(request)| request)
        .map_err(|rejection| Refusal(StatusCode::BAD_REQUEST, rejection.body_text()))
}

/// Runs a pass over the stores (whose sink closure the compiler cannot prove `Send` for
/// every lifetime, as axum's handlers must be) on a blocking thread driving the same
/// runtime.
async fn off_handler<T, F, Fut>(app: Arc<App>, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(Arc<App>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work(app)))
        .await
        .map_err(|e| anyhow::anyhow!("the pass did not finish: {e}"))?
}

/// A store or queue failure: the service is degraded, the request was fine.
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin request failed");
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn parse_kind(kind: Option<&str>) -> Result<Option<JobKind>, Refusal> {
    match kind {
        None => Ok(None),
        Some(name) => JobKind::parse(name).map(Some).ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("unknown job kind {name:?}"),
            )
        }),
    }
}

async fn queue_stats(State(app): State<Arc<App>>) -> Response {
    match app.queue.stats().await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    state: String,
    kind: Option<String>,
    cursor: Option<u64>,
    limit: Option<usize>,
}

async fn jobs(
    State(app): State<Arc<App>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    let query = match query.map_err(|r| Refusal(StatusCode::BAD_REQUEST, r.body_text())) {
        Ok(Query(query)) => query,
        Err(refused) => return refused.into_response(),
    };
    let Some(state) = JobState::parse(&query.state) else {
        let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown state {:?}: {}", query.state, known.join(", ")),
        );
    };
    let kind = match parse_kind(query.kind.as_deref()) {
        Ok(kind) => kind,
        Err(refused) => return refused.into_response(),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    match app
        .queue
        .list(state, kind, query.cursor.unwrap_or(0), limit)
        .await
    {
        Ok(page) => Json(page).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn job(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let job = match app.queue.show(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id:?}")),
        Err(e) => return unavailable(e),
    };
    let trail = match &job.job {
        Some(payload) => {
            let filter = AuditFilter {
                execution_id: Some(payload.execution_id.as_str().to_owned()),
                agent: None,
                since: None,
                limit: 50,
            };
            match audit::query(app.rows.database(), &filter).await {
                Ok(rows) => rows,
                Err(e) => return unavailable(e),
            }
        }
        None => Vec::new(),
    };
    Json(json!({ "job": job, "audit": trail })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StuckQuery {
    actionable: Option<bool>,
}

async fn stuck(
    State(app): State<Arc<App>>,
    query: Result<Query<StuckQuery>, QueryRejection>,
) -> Response {
    let query = match query.map_err(|r| Refusal(StatusCode::BAD_REQUEST, r.body_text())) {
        Ok(Query(query)) => query,
        Err(refused) => return refused.into_response(),
    };
    let actionable = query.actionable.unwrap_or(false);
    let report = off_handler(app, move |app| async move {
        super::stuck::report(&app.settings, &app.slots, &app.rows, actionable).await
    })
    .await;
    match report {
        Ok(report) => Json(report).into_response(),
        Err(e) => unavailable(format!("{e:#}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    execution: Option<String>,
    agent: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

async fn audit_trail(
    State(app): State<Arc<App>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let query = match query.map_err(|r| Refusal(StatusCode::BAD_REQUEST, r.body_text())) {
        Ok(Query(query)) => query,
        Err(refused) => return refused.into_response(),
    };
    let since = match query.since.as_deref().map(super::audit::since).transpose() {
        Ok(since) => since,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    let filter = AuditFilter {
        execution_id: query.execution,
        agent: query.agent,
        since,
        limit: query.limit.unwrap_or(100).clamp(1, 1_000),
    };
    match audit::query(app.rows.database(), &filter).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all_dead: bool,
    kind: Option<String>,
}

async fn retry(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<RetryRequest>, JsonRejection>,
) -> Response {
    let request = match command(&app, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    if request.all_dead != request.ids.is_empty() {
        return error(StatusCode::BAD_REQUEST, "give either ids or all_dead: true");
    }
    let kind = match parse_kind(request.kind.as_deref()) {
        Ok(kind) => kind,
        Err(refused) => return refused.into_response(),
    };
    let outcomes = if request.all_dead {
        app.queue.retry_all_dead(kind).await
    } else {
        app.queue
            .retry_dead(&request.ids)
            .await
            .map(|o| request.ids.iter().cloned().zip(o).collect())
    };
    match outcomes {
        Ok(outcomes) => {
            let (moved, not_dead): (Vec<_>, Vec<_>) = outcomes
                .into_iter()
                .partition(|(_, o)| *o == RetryOutcome::Moved);
            let ids = |v: Vec<(String, RetryOutcome)>| {
                v.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            };
            Json(json!({ "moved": ids(moved), "not_dead": ids(not_dead) })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    state: String,
    older_than: String,
}

async fn purge(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Response {
    let request = match command(&app, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let dead = match request.state.as_str() {
        "done" => false,
        "dead" => true,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state {other:?}: done or dead"),
            )
        }
    };
    let older_than = match crate::cli::parse_duration(&request.older_than) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("older_than: {e}")),
    };
    match app.queue.purge(dead, older_than).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepRequest {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
}

/// A sweep now (under the lease, waiting at most a second for another producer's).
async fn sweep_now(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<SweepRequest>, JsonRejection>,
) -> Response {
    let request = match command(&app, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let report = off_handler(app, move |app| async move {
        super::sweep::sweep_once(
            &app.settings,
            &app.slots,
            &app.rows,
            &app.queue,
            request.dry_run,
            request.force,
            std::time::Duration::from_secs(1),
        )
        .await
    })
    .await;
    match report {
        Ok(report) => Json(report).into_response(),
        Err(e) => error(StatusCode::CONFLICT, format!("{e:#}")),
    }
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
    let request = match command(&app, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
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
