//! `janitor config`: the effective settings, passwords redacted, each with its source.

use crate::cli::ConfigArgs;
use crate::settings::{Settings, Source};

pub fn run(settings: &Settings, args: &ConfigArgs) -> anyhow::Result<()> {
    let rows = settings.redacted();
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, value, source)| {
                (
                    (*name).to_owned(),
                    serde_json::json!({ "value": value, "source": source }),
                )
            })
            .collect();
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
    Ok(())
}

/// Quotes values that are not plain integers, TOML style.
fn toml_string(value: &str) -> String {
    if value.parse::<i64>().is_ok() {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}
