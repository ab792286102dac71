//! `janitor healthcheck`: asks a running janitor's `GET /healthz`, for container health
//! checks, so the runtime image needs no HTTP client of its own.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cli::HealthcheckArgs;

pub async fn run(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let url = url::Url::parse(&args.url).with_context(|| format!("bad URL {:?}", args.url))?;
    if url.scheme() != "http" {
        bail!("only http:// URLs are supported, got {}", url.scheme());
    }
    let host = url.host_str().context("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            url.path()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        // The status line is all we need.
        stream.take(256).read_to_end(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .context("no answer within 3 s")?
        .with_context(|| format!("cannot reach {url}"))?;
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => {
            println!("healthy: {url}");
            Ok(())
        }
        _ => bail!("unhealthy: {url} answered {status_line:?}"),
    }
}
