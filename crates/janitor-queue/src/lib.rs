//! janitor's job queue, on apalis-redis 1.0.0 with its key layout.
//!
//! The library has reproduced defects (see `shared/reference/apalis-redis-1.0.md`); this
//! crate is where the guards live:
//! - payloads are stored as raw JSON bytes and decoded by janitor, so a malformed payload
//!   is a dead job rather than a codec error that ends every worker's stream;
//! - task ids are deterministic, prefixed by the job kind (never numeric) and carry the
//!   evidence that makes the work new; a finished id whose work is needed again is
//!   recycled, since the library silently ignores pushes of an existing id;
//! - the due backlog is capped at push time and due ids are promoted in bounded chunks,
//!   so `fetch_next`'s unbounded `unpack` never sees enough ids to wedge.

mod codec;
mod inspect;
mod keys;
mod pacer;
mod queue;

pub use codec::RawJson;
pub use inspect::{JobInfo, JobPage, JobState, PurgeReport, QueueStats, RetryOutcome};
pub use keys::QueueKeys;
pub use pacer::Pacer;
pub use queue::{
    EnqueueReport, Existing, Queue, QueueError, QueueSettings, DEFAULT_BACKLOG_CAP, DEFAULT_QUEUE,
};
