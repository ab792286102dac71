//! The JSON API under `/api/v1/`: the queue, jobs, stuck records and the audit trail to
//! read; retry, purge, sweep and the skip intake to change, behind the bearer token.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use janitor_core::{AgentName, ExecutionId};
use janitor_producer::{enqueue_skip, SkipError};
use janitor_queue::{JobState, RetryOutcome};
use janitor_store::sql::audit::{self, AuditFilter};
use serde::Deserialize;
use serde_json::json;

use super::{command, error, off_handler, parse_kind, read_query, unavailable, App};
use crate::commands;

pub(super) async fn queue_stats(State(app): State<Arc<App>>) -> Response {
    match app.queue.stats().await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobsQuery {
    state: String,
    kind: Option<String>,
    cursor: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn jobs(
    State(app): State<Arc<App>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    let query = match read_query(query) {
        Ok(query) => query,
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

pub(super) async fn job(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
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
pub(super) struct StuckQuery {
    actionable: Option<bool>,
    /// At most this many pairs (all by default); `pairs_total` says how many there were.
    limit: Option<usize>,
}

pub(super) async fn stuck(
    State(app): State<Arc<App>>,
    query: Result<Query<StuckQuery>, QueryRejection>,
) -> Response {
    let query = match read_query(query) {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let actionable = query.actionable.unwrap_or(false);
    let report = off_handler(app, move |app| async move {
        commands::stuck::report(&app.settings, &app.slots, &app.rows, actionable).await
    })
    .await;
    match report {
        Ok(mut report) => {
            if let Some(limit) = query.limit {
                report.truncate(limit);
            }
            Json(report).into_response()
        }
        Err(e) => unavailable(format!("{e:#}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    execution: Option<String>,
    agent: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn audit_trail(
    State(app): State<Arc<App>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let query = match read_query(query) {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let since = match query
        .since
        .as_deref()
        .map(commands::audit::since)
        .transpose()
    {
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
pub(super) struct RetryRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all_dead: bool,
    kind: Option<String>,
}

pub(super) async fn retry(
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
pub(super) struct PurgeRequest {
    state: String,
    older_than: String,
}

pub(super) async fn purge(
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
pub(super) struct SweepRequest {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
}

/// A sweep now (under the lease, waiting at most a second for another producer's).
pub(super) async fn sweep_now(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<SweepRequest>, JsonRejection>,
) -> Response {
    let request = match command(&app, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let report = off_handler(app, move |app| async move {
        commands::sweep::sweep_once(
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
pub(super) struct SkipRequest {
    execution_id: String,
    agent: Option<String>,
}

pub(super) async fn skip(
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
