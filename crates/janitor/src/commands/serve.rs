//! `janitor serve`: the admin HTTP server on its own (see [`crate::admin`]).

use crate::cli::ServeArgs;
use crate::{admin, context, settings::Settings};

pub async fn run(settings: &Settings, args: &ServeArgs) -> anyhow::Result<()> {
    let slots = context::slot_store(settings).await?;
    let rows = context::execution_store(settings).await?;
    let queue = context::queue(settings, &slots);
    let listener = admin::bind(args.listen).await?;
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
