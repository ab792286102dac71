//! The library's key layout for one queue, in one place.

/// Keys of queue `Q`, as apalis-redis 1.0.0 lays them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    name: String,
}

impl QueueKeys {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Q:scheduled` ZSET: every push and every retry lands here first.
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.name)
    }

    /// `Q:active` LIST: due ids waiting for a worker.
    pub fn active(&self) -> String {
        format!("{}:active", self.name)
    }

    /// `Q:signal` LIST: wakes pollers.
    pub fn signal(&self) -> String {
        format!("{}:signal", self.name)
    }

    /// `Q:data` HASH: id → payload.
    pub fn data(&self) -> String {
        format!("{}:data", self.name)
    }

    /// `Q:meta:{id}` HASH: attempts, status, result (last error), …
    pub fn meta(&self, id: &str) -> String {
        format!("{}:{id}", self.meta_prefix())
    }

    /// `Q:meta`: what [`Self::meta`] puts before `:{id}`.
    pub fn meta_prefix(&self) -> String {
        format!("{}:meta", self.name)
    }

    /// `Q:done` SET.
    pub fn done(&self) -> String {
        format!("{}:done", self.name)
    }

    /// `Q:dead` SET.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.name)
    }

    /// janitor's HASH of re-driven work: the task id of a job that went dead → the id of
    /// its latest re-drive.
    pub fn redriven(&self) -> String {
        format!("{}:janitor:redriven", self.name)
    }

    /// `Q:workers` ZSET of heartbeats.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.name)
    }

    /// `Q:inflight:{worker}` SET.
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}:inflight:{worker}", self.name)
    }
}
