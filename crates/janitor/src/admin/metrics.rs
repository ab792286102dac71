//! `GET /metrics`: the Prometheus text exposition of everything this process recorded
//! (see `janitor_metrics` for the names), plus the queue's depth read from Redis at scrape
//! time — every replica reports the same queue, so dashboards take `max` over replicas.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use janitor_core::JobKind;
use janitor_metrics::{
    DUE_BUCKETS, DUE_PASS_DURATION, REAP_BUCKETS, REAP_LATENCY, SWEEP_BUCKETS, SWEEP_DURATION,
};
use janitor_store::AuditAction;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::App;

/// The process-wide Prometheus recorder.
#[derive(Clone)]
pub struct Exporter(PrometheusHandle);

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histograms are compacted between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

impl Exporter {
    /// Installs the recorder the first time (later calls share it). From here on every
    /// `janitor_metrics` event in this process is recorded.
    pub fn install() -> anyhow::Result<Self> {
        if let Some(handle) = INSTALLED.get() {
            return Ok(Self(handle.clone()));
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(SWEEP_DURATION.into()), SWEEP_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(REAP_LATENCY.into()), REAP_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(DUE_PASS_DURATION.into()), DUE_BUCKETS)
            })
            .context("configuring the metrics' histogram buckets")?
            .install_recorder()
            .context("installing the metrics recorder")?;
        janitor_metrics::describe();
        janitor_metrics::register(
            &JobKind::ALL.map(JobKind::as_str),
            &AuditAction::ALL.map(AuditAction::as_str),
        );
        janitor_metrics::build_info(env!("CARGO_PKG_VERSION"));
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(UPKEEP);
            loop {
                ticker.tick().await;
                upkeep.run_upkeep();
            }
        });
        let _ = INSTALLED.set(handle.clone());
        Ok(Self(handle))
    }
}

/// The Prometheus text, after reading the queue's depth (at most a second; on failure
/// `janitor_queue_up` is 0 and the last depths stay).
#[utoipa::path(get, path = "/metrics", tag = "process",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain")))]
pub(super) async fn scrape(State(app): State<Arc<App>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(1), app.queue.stats()).await {
        Ok(Ok(stats)) => janitor_metrics::queue_depth(
            [
                ("scheduled_due", stats.scheduled_due),
                ("scheduled_future", stats.scheduled_future),
                ("retrying", stats.retrying),
                ("active", stats.active),
                ("in_flight", stats.in_flight.values().sum()),
                ("dead", stats.dead),
                ("done", stats.done),
            ],
            stats.oldest_due_age_secs,
            stats.workers_alive,
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the queue could not be read");
            janitor_metrics::queue_unreadable();
        }
        Err(_) => {
            tracing::warn!("metrics: reading the queue timed out");
            janitor_metrics::queue_unreadable();
        }
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.0.render(),
    )
        .into_response()
}
