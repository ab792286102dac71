//! The JSON API under `/api/v1/`: the queue, jobs, stuck records and the audit trail to
//! read; retry, purge, sweep and the skip intake to change, behind the bearer token.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use janitor_core::{AgentName, ExecutionId};
use janitor_producer::{enqueue_skip, SkipError};
use janitor_queue::{JobState, RetryOutcome};
use janitor_store::sql::audit::{self, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    command, error, in_range, off_handler, parse_kind, read_query, unavailable, App, ErrorBody,
};
use crate::commands;

/// How every change refuses a request without the right token (see `super::authorize`).
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // Only its documentation is used: the refusals are `super::Refusal`s.
pub(super) enum AuthRefusal {
    /// A missing or wrong bearer token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No admin token is configured: changes are disabled
    #[response(status = 403)]
    Disabled(ErrorBody),
}

/// Jobs per state, the workers alive and the oldest due job's wait (`janitor queue stats`).
#[utoipa::path(get, path = "/api/v1/queue/stats", tag = "queue",
    responses(
        (status = 200, description = "The queue's counts", body = janitor_queue::QueueStats),
        (status = 503, description = "Redis did not answer", body = ErrorBody),
    ))]
pub(super) async fn queue_stats(State(app): State<Arc<App>>) -> Response {
    match app.queue.stats().await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct JobsQuery {
    /// scheduled, retrying, active, in_flight, dead or done.
    #[param(value_type = janitor_queue::JobState)]
    state: String,
    /// Only jobs of this kind.
    #[param(value_type = Option<janitor_core::JobKind>)]
    kind: Option<String>,
    /// The `next` of the previous page (0 or none for the first).
    #[param(minimum = 0)]
    cursor: Option<i64>,
    /// Ids read per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// One page of the jobs in a state (`janitor queue list`).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "queue", params(JobsQuery),
    responses(
        (status = 200, description = "A page of jobs; follow `next`", body = janitor_queue::JobPage),
        (status = 400, description = "An unknown state or kind, or a malformed query", body = ErrorBody),
        (status = 503, description = "Redis did not answer", body = ErrorBody),
    ))]
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
    let (cursor, limit) = match (
        in_range("cursor", query.cursor.unwrap_or(0), 0, i64::MAX),
        in_range("limit", query.limit.unwrap_or(50), 1, 500),
    ) {
        (Ok(cursor), Ok(limit)) => (cursor as u64, limit as usize),
        (Err(refused), _) | (_, Err(refused)) => return refused.into_response(),
    };
    match app.queue.list(state, kind, cursor, limit).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => unavailable(e),
    }
}

/// A job and its run's audit rows.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JobDetail {
    job: janitor_queue::JobInfo,
    /// The audit rows of the job's run, newest first (at most 50).
    audit: Vec<audit::AuditRecord>,
}

/// One job, with the audit rows of its run (`janitor queue show`).
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "queue",
    params(("id" = String, Path, description = "The job's task id")),
    responses(
        (status = 200, description = "The job", body = JobDetail),
        (status = 400, description = "An id that is not UTF-8", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "Redis or the database did not answer", body = ErrorBody),
    ))]
pub(super) async fn job(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
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
    Json(JobDetail { job, audit: trail }).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StuckQuery {
    /// Only the pairs a job would change.
    actionable: Option<bool>,
    /// At most this many pairs (all by default); `pairs_total` says how many there were.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

/// Every open run and every slot without a live run, with its verdict (`janitor stuck`).
#[utoipa::path(get, path = "/api/v1/stuck", tag = "records", params(StuckQuery),
    responses(
        (status = 200, description = "The stuck records report", body = crate::commands::stuck::Report),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 503, description = "Redis or the database did not answer", body = ErrorBody),
    ))]
pub(super) async fn stuck(
    State(app): State<Arc<App>>,
    query: Result<Query<StuckQuery>, QueryRejection>,
) -> Response {
    let query = match read_query(query) {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let actionable = query.actionable.unwrap_or(false);
    let limit = match query
        .limit
        .map(|l| in_range("limit", l, 0, i64::MAX))
        .transpose()
    {
        Ok(limit) => limit.map(|l| l as usize),
        Err(refused) => return refused.into_response(),
    };
    let report = off_handler(app, move |app| async move {
        commands::stuck::report(&app.settings, &app.slots, &app.rows, actionable).await
    })
    .await;
    match report {
        Ok(mut report) => {
            if let Some(limit) = limit {
                report.truncate(limit);
            }
            Json(report).into_response()
        }
        Err(e) => unavailable(format!("{e:#}")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only this run's rows.
    execution: Option<String>,
    /// Only this agent's rows.
    agent: Option<String>,
    /// An RFC 3339 time or an age such as `12h`.
    since: Option<String>,
    /// At most this many rows (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// What janitor changed and why, newest first (`janitor audit`).
#[utoipa::path(get, path = "/api/v1/audit", tag = "records", params(AuditQuery),
    responses(
        (status = 200, description = "Audit rows, newest first", body = Vec<audit::AuditRecord>),
        (status = 400, description = "A malformed query or `since`", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
pub(super) async fn audit_trail(
    State(app): State<Arc<App>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let query = match read_query(query) {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let limit = match in_range("limit", query.limit.unwrap_or(100), 1, 1_000) {
        Ok(limit) => limit as u32,
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
    // Names as the platform can spell them: a NUL or another control character is no
    // agent or run (PostgreSQL would refuse the NUL as a 503), so it is the query's fault.
    if let Some(refused) = query
        .execution
        .as_deref()
        .and_then(|id| ExecutionId::parse(id).err())
        .or_else(|| {
            query
                .agent
                .as_deref()
                .and_then(|a| AgentName::parse(a).err())
        })
    {
        return error(StatusCode::BAD_REQUEST, refused.to_string());
    }
    let filter = AuditFilter {
        execution_id: query.execution,
        agent: query.agent,
        since,
        limit,
    };
    match audit::query(app.rows.database(), &filter).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Either `ids`, or `all_dead: true` (optionally of one `kind`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all_dead: bool,
    #[schema(value_type = Option<janitor_core::JobKind>)]
    kind: Option<String>,
}

/// Which ids went back to due, and which were not dead (left alone).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RetryResult {
    moved: Vec<String>,
    not_dead: Vec<String>,
}

/// Dead jobs back to due, attempts reset (`janitor queue retry`); idempotent.
#[utoipa::path(post, path = "/api/v1/jobs/retry", tag = "queue", request_body = RetryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What moved", body = RetryResult),
        (status = 400, description = "Neither or both of ids and all_dead, an unknown kind, or a malformed body", body = ErrorBody),
        AuthRefusal,
        (status = 503, description = "Redis did not answer", body = ErrorBody),
    ))]
pub(super) async fn retry(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<super::Object<RetryRequest>>, JsonRejection>,
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
            Json(RetryResult {
                moved: ids(moved),
                not_dead: ids(not_dead),
            })
            .into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// Retention: `state` done or dead, `older_than` a duration such as `7d`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeRequest {
    state: PurgeState,
    /// Seconds, or a number with s, m, h or d.
    #[schema(pattern = r"^\s*[0-9]+[smhd]?\s*$")]
    older_than: String,
}

/// The finished sets retention applies to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum PurgeState {
    Done,
    Dead,
}

/// Deletes done or dead jobs finished longer ago than `older_than` (`janitor queue purge`).
#[utoipa::path(post, path = "/api/v1/jobs/purge", tag = "queue", request_body = PurgeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What was purged and kept", body = janitor_queue::PurgeReport),
        (status = 400, description = "A state other than done or dead, a bad duration, or a malformed body", body = ErrorBody),
        AuthRefusal,
        (status = 503, description = "Redis did not answer", body = ErrorBody),
    ))]
pub(super) async fn purge(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<super::Object<PurgeRequest>>, JsonRejection>,
) -> Response {
    let request = match command(&app, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let dead = matches!(request.state, PurgeState::Dead);
    let older_than = match crate::cli::parse_duration(&request.older_than) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("older_than: {e}")),
    };
    match app.queue.purge(dead, older_than).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => unavailable(e),
    }
}

/// A sweep's options: `force` past the breaker and the wrong-database refusal, `dry_run`
/// to enqueue nothing.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SweepRequest {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
}

/// A sweep now (under the lease, waiting at most a second for another producer's).
#[utoipa::path(post, path = "/api/v1/sweep", tag = "sweep", request_body = SweepRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sweep's report", body = janitor_producer::SweepReport),
        (status = 400, description = "A malformed body", body = ErrorBody),
        AuthRefusal,
        (status = 409, description = "Another producer holds the sweep lease, or a store failed", body = ErrorBody),
    ))]
pub(super) async fn sweep_now(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<super::Object<SweepRequest>>, JsonRejection>,
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
            &commands::sweep::options(&app.settings, request.dry_run, request.force),
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

/// The run the scheduler skipped; `agent` lets it be enqueued before its row is committed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SkipRequest {
    execution_id: String,
    agent: Option<String>,
}

/// The scheduler's hook: enqueue the finalize job of a skipped run, due at the skip
/// threshold, under the id the sweep would use. Idempotent: a repeat is `already_queued`.
#[utoipa::path(post, path = "/api/v1/skip", tag = "sweep", request_body = SkipRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Enqueued (or already queued)", body = janitor_producer::SkipReceipt),
        (status = 400, description = "A malformed body, execution id or agent name", body = ErrorBody),
        AuthRefusal,
        (status = 404, description = "No such run (give `agent` to enqueue it anyway)", body = ErrorBody),
        (status = 409, description = "The run is not skipped, or its row is unreadable", body = ErrorBody),
        (status = 503, description = "Redis or the database did not answer", body = ErrorBody),
    ))]
pub(super) async fn skip(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<super::Object<SkipRequest>>, JsonRejection>,
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
