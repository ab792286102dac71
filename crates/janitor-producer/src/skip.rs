//! Skip-time enqueue: a scheduler that skips a run (agent busy) enqueues its finalize job
//! right away, delayed to the skip threshold. The sweep stays the safety net and finds the
//! same job id, so nothing is enqueued twice.

use std::time::Duration;

use chrono::TimeDelta;
use janitor_core::{AgentName, CleanupJob, ExecutionId, JobKind, Policy, Status, JOB_VERSION};
use janitor_queue::{EnqueueReport, Queue, QueueError};
use janitor_store::{ExecutionStore, RowEntry, SlotStore, StoreError};
use serde::Serialize;

/// What a skip enqueue did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SkipReceipt {
    pub task_id: String,
    pub agent: AgentName,
    pub delay_secs: u64,
    #[serde(flatten)]
    pub queue: EnqueueReport,
}

/// Why a skip could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum SkipError {
    #[error("unknown execution {0}: no such row (pass --agent to enqueue it anyway)")]
    UnknownExecution(ExecutionId),
    #[error("execution {id} is {status}, not skipped: nothing to finalize")]
    NotSkipped { id: ExecutionId, status: Status },
    #[error("execution {0}'s row is unreadable: {1}")]
    Corrupt(ExecutionId, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Enqueues the finalize job of a skipped run, due when the run passes the skip threshold.
/// With a known row the delay counts from its `started_at`; with only an agent given (the
/// row may not be committed yet) the full threshold applies.
pub async fn enqueue_skip(
    queue: &Queue,
    slots: &SlotStore,
    rows: &ExecutionStore,
    policy: &Policy,
    execution_id: &ExecutionId,
    agent: Option<&AgentName>,
) -> Result<SkipReceipt, SkipError> {
    let full = policy.skipped_after_secs.max(0) as u64;
    let (agent, delay) = match rows
        .rows_by_ids(std::slice::from_ref(execution_id))
        .await?
        .pop()
    {
        Some(RowEntry::Row(row)) => {
            if row.status != Status::Skipped {
                return Err(SkipError::NotSkipped {
                    id: execution_id.clone(),
                    status: row.status,
                });
            }
            let now = slots.server_time().await?;
            let delay = match row.started_at {
                Ok(started) => {
                    let due = started + TimeDelta::seconds(policy.skipped_after_secs);
                    // +1 s: the rule fires strictly after the threshold.
                    (due - now).num_seconds().clamp(0, full as i64) as u64 + 1
                }
                Err(_) => full,
            };
            (agent.cloned().unwrap_or(row.agent), delay)
        }
        Some(RowEntry::Corrupt(c)) => {
            return Err(SkipError::Corrupt(execution_id.clone(), c.reason))
        }
        None => match agent {
            Some(agent) => (agent.clone(), full + 1),
            None => return Err(SkipError::UnknownExecution(execution_id.clone())),
        },
    };
    let job = CleanupJob {
        version: JOB_VERSION,
        kind: JobKind::FinalizeSkipped,
        agent: agent.clone(),
        execution_id: execution_id.clone(),
        observed_score: None,
        deadline: None,
        observed_status: Some(Status::Skipped),
        redrive_of: None,
    };
    let report = queue
        .enqueue(std::slice::from_ref(&job), Duration::from_secs(delay))
        .await?;
    Ok(SkipReceipt {
        task_id: job.task_id(),
        agent,
        delay_secs: delay,
        queue: report,
    })
}
