//! Redis key shapes, all in one place.
//!
//! The platform's layout is the default: `agent:slots:{agent}` (ZSET, member = execution id,
//! score = unix seconds at acquire) and `agent:slot:{agent}:{execution_id}` (HASH). Agent
//! names may contain `:` so the hash key cannot be split reliably; the ZSET key is
//! authoritative and the agent name is whatever follows its prefix.

use janitor_core::{AgentName, ExecutionId};

/// The platform's slot ZSET prefix.
pub const DEFAULT_SLOT_PREFIX: &str = "agent:slots:";
/// The platform's slot metadata HASH prefix.
pub const DEFAULT_SLOT_META_PREFIX: &str = "agent:slot:";

/// The platform's in-flight marker prefix: `execution:inflight:{execution_id}` exists while
/// a dispatch is alive in a backend process.
pub const DEFAULT_INFLIGHT_PREFIX: &str = "execution:inflight:";
/// The member prefix of the platform's backlog sentinels in a slot ZSET.
pub const DEFAULT_SENTINEL_PREFIX: &str = "drain-";

/// The configurable key shapes of the slot layout: the slot ZSET and HASH prefixes, the
/// in-flight marker prefix and the backlog sentinel member prefix (each of the last two
/// empty = not used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotKeys {
    slot_prefix: String,
    meta_prefix: String,
    outbox: String,
    census: String,
    census_walk: String,
    inflight_prefix: String,
    sentinel_prefix: String,
}

impl Default for SlotKeys {
    fn default() -> Self {
        Self::new(DEFAULT_SLOT_PREFIX, DEFAULT_SLOT_META_PREFIX)
    }
}

impl SlotKeys {
    /// The layout with these slot prefixes. The marker prefix follows the slot prefix's
    /// namespace: `agent:slots:` gives the platform's `execution:inflight:`, and a
    /// namespaced `ns:agent:slots:` gives `ns:execution:inflight:`.
    pub fn new(slot_prefix: impl Into<String>, meta_prefix: impl Into<String>) -> Self {
        let slot_prefix = slot_prefix.into();
        let namespace = slot_prefix
            .strip_suffix(DEFAULT_SLOT_PREFIX)
            .unwrap_or_default();
        Self {
            outbox: format!("janitor:audit-outbox:{slot_prefix}"),
            census: format!("janitor:census:{slot_prefix}"),
            census_walk: format!("janitor:census-walk:{slot_prefix}"),
            inflight_prefix: format!("{namespace}{DEFAULT_INFLIGHT_PREFIX}"),
            sentinel_prefix: DEFAULT_SENTINEL_PREFIX.to_owned(),
            slot_prefix,
            meta_prefix: meta_prefix.into(),
        }
    }

    /// Sets the in-flight marker prefix (empty: markers are not read).
    pub fn with_inflight_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inflight_prefix = prefix.into();
        self
    }

    /// Sets the backlog sentinel member prefix (empty: no member is a sentinel).
    pub fn with_sentinel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.sentinel_prefix = prefix.into();
        self
    }

    pub fn inflight_prefix(&self) -> &str {
        &self.inflight_prefix
    }

    pub fn sentinel_prefix(&self) -> &str {
        &self.sentinel_prefix
    }

    /// `execution:inflight:{execution_id}`, unless markers are off.
    pub fn inflight(&self, execution: &ExecutionId) -> Option<String> {
        (!self.inflight_prefix.is_empty()).then(|| format!("{}{}", self.inflight_prefix, execution))
    }

    /// Whether a slot member is one of the platform's backlog sentinels.
    pub fn is_sentinel(&self, execution: &ExecutionId) -> bool {
        !self.sentinel_prefix.is_empty() && execution.as_str().starts_with(&self.sentinel_prefix)
    }

    /// janitor's audit outbox STREAM for this layout: `janitor:audit-outbox:{slot prefix}`
    /// (outside the platform's `agent:*` namespace, which its own sweeps scan, and shared by
    /// every replica that reconciles the same slots).
    pub fn outbox(&self) -> &str {
        &self.outbox
    }

    /// janitor's census SET of every slot ZSET key of this layout:
    /// `janitor:census:{slot prefix}`, kept across sweeps (see
    /// [`crate::SlotStore::census_walk`]).
    pub fn census(&self) -> &str {
        &self.census
    }

    /// Where the census's walk of the keyspace is (a HASH: the `SCAN` cursor of the walk in
    /// progress, when the last walk completed): `janitor:census-walk:{slot prefix}`.
    pub fn census_walk(&self) -> &str {
        &self.census_walk
    }

    pub fn slot_prefix(&self) -> &str {
        &self.slot_prefix
    }

    pub fn meta_prefix(&self) -> &str {
        &self.meta_prefix
    }

    /// `agent:slots:{agent}`
    pub fn slots(&self, agent: &AgentName) -> String {
        format!("{}{}", self.slot_prefix, agent)
    }

    /// `agent:slot:{agent}:{execution_id}`
    pub fn meta(&self, agent: &AgentName, execution: &ExecutionId) -> String {
        format!("{}{}:{}", self.meta_prefix, agent, execution)
    }

    /// The agent name a slot ZSET key belongs to, if the key has the slot prefix.
    pub fn agent_of<'k>(&self, slots_key: &'k str) -> Option<&'k str> {
        slots_key.strip_prefix(&self.slot_prefix)
    }

    /// The `SCAN MATCH` pattern for every slot ZSET, with glob metacharacters in the prefix
    /// escaped so an odd prefix cannot match foreign keys.
    pub fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.slot_prefix.len() + 2);
        for c in self.slot_prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_layout() {
        let keys = SlotKeys::default();
        let agent = AgentName::parse("team:a b/ü").unwrap();
        let exec = ExecutionId::parse("abc").unwrap();
        assert_eq!(keys.slots(&agent), "agent:slots:team:a b/ü");
        assert_eq!(keys.meta(&agent, &exec), "agent:slot:team:a b/ü:abc");
        assert_eq!(keys.agent_of("agent:slots:team:a b/ü"), Some("team:a b/ü"));
        assert_eq!(keys.agent_of("agent:slot:x:y"), None);
        assert_eq!(keys.scan_pattern(), "agent:slots:*");
        assert_eq!(
            keys.inflight(&exec).as_deref(),
            Some("execution:inflight:abc")
        );
        assert!(keys.is_sentinel(&ExecutionId::parse("drain-42").unwrap()));
        assert!(!keys.is_sentinel(&exec));
    }

    #[test]
    fn markers_follow_the_namespace_and_can_be_switched_off() {
        let keys = SlotKeys::new("t1:agent:slots:", "t1:agent:slot:");
        let exec = ExecutionId::parse("abc").unwrap();
        assert_eq!(
            keys.inflight(&exec).as_deref(),
            Some("t1:execution:inflight:abc")
        );
        let off = keys.with_inflight_prefix("").with_sentinel_prefix("");
        assert_eq!(off.inflight(&exec), None);
        assert!(!off.is_sentinel(&ExecutionId::parse("drain-42").unwrap()));
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        let keys = SlotKeys::new("t[1]*?:slots:", "m:");
        assert_eq!(keys.scan_pattern(), r"t\[1\]\*\?:slots:*");
    }
}
