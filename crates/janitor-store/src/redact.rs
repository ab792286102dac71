//! Redacting credentials from URLs before they reach a log line or an error message.

/// The URL with any password replaced by `***`. Text that does not parse as a URL is
/// returned with everything between `://` and the last `@` masked, to be safe.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_ok() {
                return parsed.to_string();
            }
            url.to_owned()
        }
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                format!("{}://***{}", &url[..start], &url[at..])
            }
            _ => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/janitor"),
            "postgres://app:***@db:5432/janitor"
        );
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("sqlite://janitor.db"), "sqlite://janitor.db");
        assert_eq!(redact_url("weird://u:p@@host"), "weird://u:***@host");
        assert!(!redact_url("x://user:pa ss@h").contains("pa ss"));
    }
}
