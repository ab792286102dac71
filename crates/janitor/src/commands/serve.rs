//! `janitor serve`: the admin HTTP server on its own (see [`crate::admin`]).

use crate::cli::ServeArgs;
use crate::{admin, context, settings::Settings};

pub async fn run(settings: &Settings, args: &ServeArgs) -> anyhow::Result<()> {
    // Listening at once: `/healthz` answers and `/readyz` says "starting" while the stores
    // are still out of reach.
    let starting = admin::Starting::start(admin::bind(args.listen).await?)?;
    let (slots, rows) = tokio::select! {
        stores = context::stores_when_ready(settings) => stores?,
        () = context::shutdown_signal() => return Ok(()),
    };
    let queue = context::queue(settings, &slots);
    let listener = starting.ready().await?;
    admin::serve(
        settings,
        listener,
        slots,
        rows,
        queue,
        context::shutdown_signal(),
    )
    .await
}
