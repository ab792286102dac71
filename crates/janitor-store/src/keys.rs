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

/// The two configurable prefixes of the slot layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotKeys {
    slot_prefix: String,
    meta_prefix: String,
    outbox: String,
}

impl Default for SlotKeys {
    fn default() -> Self {
        Self::new(DEFAULT_SLOT_PREFIX, DEFAULT_SLOT_META_PREFIX)
    }
}

impl SlotKeys {
    pub fn new(slot_prefix: impl Into<String>, meta_prefix: impl Into<String>) -> Self {
        let slot_prefix = slot_prefix.into();
        Self {
            outbox: format!("janitor:audit-outbox:{slot_prefix}"),
            slot_prefix,
            meta_prefix: meta_prefix.into(),
        }
    }

    /// janitor's audit outbox STREAM for this layout: `janitor:audit-outbox:{slot prefix}`
    /// (outside the platform's `agent:*` namespace, which its own sweeps scan, and shared by
    /// every replica that reconciles the same slots).
    pub fn outbox(&self) -> &str {
        &self.outbox
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
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        let keys = SlotKeys::new("t[1]*?:slots:", "m:");
        assert_eq!(keys.scan_pattern(), r"t\[1\]\*\?:slots:*");
    }
}
