//! `GET /`: the operator's page — queue overview, dead and retrying jobs with their errors
//! and a retry button, stuck records with their verdicts, recent audit.
//!
//! Three small static files compiled into the binary (no build step, nothing fetched at
//! run time); the page reads the same JSON API as every other client and sends the admin
//! token the operator types only with the requests that change something. A strict
//! Content-Security-Policy keeps it to its own origin.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");

/// (name, content type, body) of every asset under `/assets/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The assets change with the binary, which a restart replaces: never serve a stale one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The operator's page.
#[utoipa::path(get, path = "/", tag = "process",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
pub(super) async fn page() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

/// The page's script and style sheet (`app.js`, `app.css`), compiled into the binary.
#[utoipa::path(get, path = "/assets/{file}", tag = "process",
    params(("file" = String, Path, description = "app.js or app.css")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"))),
        (status = 400, description = "A name that is not UTF-8", body = super::ErrorBody),
        (status = 404, description = "No such asset", body = super::ErrorBody),
    ))]
pub(super) async fn asset(name: Result<Path<String>, PathRejection>) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(rejection) => return super::error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => respond(content_type, body),
        None => super::error(StatusCode::NOT_FOUND, format!("no asset {name:?}")),
    }
}
