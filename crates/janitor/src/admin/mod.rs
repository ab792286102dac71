//! The admin HTTP server, started by `janitor serve` and by `janitor run`.
//!
//! `GET /` is the operator's page (see [`ui`]); `GET /metrics` the Prometheus text (see
//! [`metrics`]); `GET /healthz` answers while the process is up; `GET /readyz` answers 200
//! only while Redis and the database both answer (503 with the failing one otherwise);
//! `GET /api/v1/openapi.json` describes all of them (see [`openapi`]).
//!
//! JSON under `/api/v1/` — reads: `GET queue/stats`, `GET jobs?state=…&kind=…&cursor=…&limit=…`,
//! `GET jobs/{id}` (with its run's audit rows), `GET stuck[?actionable=true]`,
//! `GET audit?execution=…&agent=…&since=…&limit=…`; changes: `POST jobs/retry`
//! (`{"ids":[…]}` or `{"all_dead":true,"kind":…}`), `POST jobs/purge`
//! (`{"state":"done","older_than":"7d"}`), `POST sweep` (`{"force":false,"dry_run":false}`),
//! `POST skip` (`{"execution_id": "…", "agent": "…"?}`, the scheduler's hook).
//! Mutating endpoints need `Authorization: Bearer $JANITOR_ADMIN_TOKEN`; without a token
//! configured they are disabled, not open. Bad requests get a 4xx with a JSON error.

mod api;
pub mod metrics;
pub mod openapi;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use janitor_core::{JobKind, Policy};
use janitor_queue::Queue;
use janitor_store::{ExecutionStore, SlotStore};
use serde_json::json;

use crate::settings::Settings;

struct App {
    settings: Settings,
    slots: SlotStore,
    rows: ExecutionStore,
    queue: Queue,
    policy: Policy,
    token: Option<String>,
    metrics: metrics::Exporter,
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

/// The admin address while the stores are not reachable yet: `GET /healthz` answers (the
/// process is up and waiting, so an orchestrator must not restart it), everything else 503
/// (`/readyz` says what it waits for). [`Starting::ready`] hands the address back for
/// [`serve`]: the same socket, so its port and its listeners' view never change.
#[derive(Debug)]
pub struct Starting {
    listener: tokio::net::TcpListener,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Starting {
    pub fn start(listener: tokio::net::TcpListener) -> anyhow::Result<Self> {
        // A second handle on the same bound socket: the waiting server answers on one and
        // stops; the real server takes the other over without a gap in the port's owner.
        let std = listener.into_std()?;
        let waiting = tokio::net::TcpListener::from_std(std.try_clone()?)?;
        let listener = tokio::net::TcpListener::from_std(std)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new()
            .route(
                "/healthz",
                get(|| async { Json(json!({ "status": "starting" })) }),
            )
            .fallback(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": "starting: waiting for Redis and the database" })),
                )
            });
        let task = tokio::spawn(async move {
            axum::serve(waiting, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            listener,
            stop,
            task,
        })
    }

    /// Stops the waiting server and returns the address for [`serve`].
    pub async fn ready(self) -> anyhow::Result<tokio::net::TcpListener> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(self.listener)
    }
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
        metrics: metrics::Exporter::install()?,
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
        .route("/", get(ui::page))
        .route("/assets/{file}", get(ui::asset))
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/skip", post(api::skip))
        .route("/api/v1/queue/stats", get(api::queue_stats))
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/jobs/retry", post(api::retry))
        .route("/api/v1/jobs/purge", post(api::purge))
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/stuck", get(api::stuck))
        .route("/api/v1/audit", get(api::audit_trail))
        .route("/api/v1/sweep", post(api::sweep_now))
        // Every error is JSON, the router's own included.
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .with_state(app)
}

/// Every error's body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, in one line.
    pub error: String,
}

/// `GET /readyz`: each store's answer, `ok` or its error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub redis: String,
    pub database: String,
}

/// The process is up. (While it still waits for its stores it answers
/// `{"status":"starting"}`, and every other endpoint a 503 `{"error": …}`.)
#[utoipa::path(get, path = "/healthz", tag = "process",
    responses((status = 200, description = "Up", body = String, content_type = "text/plain")))]
async fn health() -> &'static str {
    "ok\n"
}

/// 200 when both stores answer within a second; 503 naming each one that did not.
#[utoipa::path(get, path = "/readyz", tag = "process",
    responses(
        (status = 200, description = "Redis and the database answer", body = Readiness),
        (status = 503, description = "One of them does not (named with its error)", body = Readiness),
    ))]
async fn ready(State(app): State<Arc<App>>) -> Response {
    let limit = std::time::Duration::from_secs(1);
    let (redis, database) = tokio::join!(
        tokio::time::timeout(limit, app.slots.server_time()),
        tokio::time::timeout(limit, app.rows.database().ping()),
    );
    let verdict = |r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e,
        Err(_) => "timed out".to_owned(),
    };
    let redis = verdict(redis.map(|r| r.map(drop).map_err(|e| e.to_string())));
    let database = verdict(database.map(|r| r.map_err(|e| e.to_string())));
    let status = if redis == "ok" && database == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { redis, database })).into_response()
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
    body: Result<Json<Object<T>>, JsonRejection>,
) -> Result<T, Refusal> {
    authorize(app, headers)?;
    body.map(|Json(Object(request))| request)
        .map_err(|rejection| Refusal(StatusCode::BAD_REQUEST, rejection.body_text()))
}

/// A request body that must be a JSON object: serde reads a struct from an array too
/// (schemathesis: `POST /api/v1/sweep` with `[]` was a sweep with every default).
pub(super) struct Object<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        T::deserialize(serde_json::Value::Object(map))
            .map(Object)
            .map_err(serde::de::Error::custom)
    }
}

/// A read's query string, parsed (400 with the reason when it does not parse).
fn read_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
    query
        .map(|Query(query)| query)
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

/// A number the API documents a range for: outside it is a 400, never silently clamped.
fn in_range(name: &str, value: i64, min: i64, max: i64) -> Result<i64, Refusal> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("{name}: {value} is not within {min} to {max}"),
        ))
    }
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

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}
