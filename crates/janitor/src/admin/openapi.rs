//! The admin API's OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]`s and
//! the types they read and answer (`ToSchema`), so it cannot drift from the code. Served at
//! `GET /api/v1/openapi.json`, printed by `janitor openapi`, committed as
//! `docs/openapi.json` (a test keeps the copy equal to what is served).

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, ErrorBody, Readiness};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "janitor admin API",
        description = "Inspect janitor's queue, its stuck records report and audit trail; \
            re-drive dead jobs, purge, sweep now, and hand it skipped runs. Changes need \
            `Authorization: Bearer $JANITOR_ADMIN_TOKEN` (403 when no token is configured). \
            Every error is `{\"error\": \"…\"}`.",
        license(name = "MIT")
    ),
    paths(
        super::ui::page, super::ui::asset, super::health, super::ready, super::metrics::scrape,
        document,
        api::queue_stats, api::jobs, api::job, api::stuck, api::audit_trail,
        api::retry, api::purge, api::sweep_now, api::skip,
    ),
    components(schemas(ErrorBody, Readiness)),
    modifiers(&Bearer),
    tags(
        (name = "queue", description = "The cleanup job queue: counts, jobs, re-drive, retention"),
        (name = "records", description = "The stuck records report and the audit trail"),
        (name = "sweep", description = "A sweep now, and the scheduler's skip hook"),
        (name = "process", description = "Liveness, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The bearer token scheme the mutating endpoints name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The value of JANITOR_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The document as served and committed (pretty, with a final newline).
pub fn document_text() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the OpenAPI document: {e}\"}}"));
    text.push('\n');
    text
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "process",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(super) async fn document() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_text(),
    )
        .into_response()
}
