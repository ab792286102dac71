//! Identifier newtypes, parsed once at the edge.
//!
//! Agent names come from users and may hold `:`, spaces, `/` and non-ASCII text, so the only
//! rule is "not empty". Execution ids are url-safe tokens minted by the platform; the slot
//! hash key is `…:{agent}:{execution_id}`, which is only unambiguous because an execution id
//! never contains `:` — so that is enforced here rather than assumed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted; anything longer is corrupt input, not a real id.
const MAX_ID_LEN: usize = 512;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {MAX_ID_LEN} bytes")]
    TooLong { what: &'static str },
    #[error("execution id {0:?} contains ':' (ids are url-safe tokens; ':' would make slot keys ambiguous)")]
    Colon(String),
    #[error("{what} {value:?} contains a control character")]
    Control { what: &'static str, value: String },
}

/// The name of an agent, exactly as the platform spells it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

impl AgentName {
    /// Accepts any non-empty name without control characters.
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_common("agent name", &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The primary key of a `schedule_executions` row, also the member of the slot ZSET.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct ExecutionId(String);

impl ExecutionId {
    /// Accepts a non-empty id without `:` or control characters.
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_common("execution id", &value)?;
        if value.contains(':') {
            return Err(IdError::Colon(value));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_common(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { what });
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::Control {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype_impls!(AgentName);
string_newtype_impls!(ExecutionId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_keep_odd_characters() {
        for name in ["a:b", "with space", "team/agent", "агент-ü", "x"] {
            assert_eq!(AgentName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(
            AgentName::parse(""),
            Err(IdError::Empty { what: "agent name" })
        );
        assert!(matches!(ExecutionId::parse("a:b"), Err(IdError::Colon(_))));
        assert!(matches!(
            ExecutionId::parse("a\nb"),
            Err(IdError::Control { .. })
        ));
        assert!(matches!(
            ExecutionId::parse("x".repeat(513)),
            Err(IdError::TooLong { .. })
        ));
        assert!(ExecutionId::parse("Zx_-9aB3kLmN0pQrStUvWx").is_ok());
    }

    #[test]
    fn serde_validates() {
        let bad: Result<ExecutionId, _> = serde_json::from_str("\"a:b\"");
        assert!(bad.is_err());
        let good: AgentName = serde_json::from_str("\"a:b\"").unwrap();
        assert_eq!(good.as_str(), "a:b");
    }
}
