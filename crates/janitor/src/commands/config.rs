//! `janitor config`: the effective settings, passwords redacted, each with its source, and
//! which rules the database's schema switches off.

use std::time::Duration;

use janitor_store::RuleOff;

use crate::cli::ConfigArgs;
use crate::context;
use crate::settings::{Settings, Source};

/// How long `config` waits for the database before saying it could not check the rules.
const SCHEMA_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(settings: &Settings, args: &ConfigArgs) -> anyhow::Result<()> {
    let rows = settings.redacted();
    let rules = rules_off(settings).await;
    if args.json {
        let mut map: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, value, source)| {
                (
                    (*name).to_owned(),
                    serde_json::json!({ "value": value, "source": source }),
                )
            })
            .collect();
        map.insert(
            "rules_off".to_owned(),
            match &rules {
                Ok(off) => serde_json::json!({ "value": off, "source": "database" }),
                Err(why) => {
                    serde_json::json!({ "value": null, "source": "database", "error": why })
                }
            },
        );
        println!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(());
    }
    match &settings.config_file {
        Some(path) => println!("# settings file: {}", path.display()),
        None => println!("# settings file: none"),
    }
    for (name, value, source) in rows {
        let source = match source {
            Source::Flag => "flag/env",
            Source::File => "file",
            Source::Default => "default",
        };
        println!("{name} = {}  # {source}", toml_string(&value));
    }
    match rules {
        Ok(off) if off.is_empty() => println!("# rules: every rule applies on this database"),
        Ok(off) => {
            for RuleOff { rule, why } in off {
                println!("# rule off: {rule} ({why})");
            }
        }
        Err(why) => println!("# rules: not checked ({why})"),
    }
    Ok(())
}

/// The rules the database's schema switches off, or why they could not be checked.
async fn rules_off(settings: &Settings) -> Result<Vec<RuleOff>, String> {
    match tokio::time::timeout(SCHEMA_CHECK_TIMEOUT, context::execution_store(settings)).await {
        Ok(Ok(store)) => Ok(store.schema().rules_off()),
        Ok(Err(e)) => Err(crate::one_line(&e)),
        Err(_) => Err(format!(
            "the database did not answer within {} s",
            SCHEMA_CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// Quotes values that are not plain integers, TOML style.
fn toml_string(value: &str) -> String {
    if value.parse::<i64>().is_ok() {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}
