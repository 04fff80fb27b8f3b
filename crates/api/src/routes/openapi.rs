//! `GET /openapi.json` (OpenAPI 3.1) and `GET /docs` (Swagger UI), both without a token.
//!
//! The document is generated from the handlers: each routes module registers its handlers
//! with utoipa-axum's `routes!`, which takes the path and method from the handler's
//! `#[utoipa::path]` and routes exactly that, so a handler cannot be served without being
//! described. [`super::router`] splits the collected router into the axum router and the
//! document, and hands this module the document it was built with.
//!
//! No token: the description tells what the API is, which the README already publishes; it
//! holds no event, camera name or token. Every route still checks its own token.
//!
//! Swagger UI's files come from the utoipa-swagger-ui crate, built with its `vendored`
//! feature (the Swagger UI release is inside a crates.io crate: nothing is downloaded at
//! build or run time) and served from the binary under `/docs/` with their own
//! Content-Security-Policy: this origin only, plus the `<style>` elements and `data:` images
//! Swagger UI's bundle adds (tests/browser/docs.py finds both blocked without them); no
//! inline script, no framing.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use bytes::Bytes;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The document's fixed parts: title, security schemes, tags, the shared error body.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "camledger",
        description = "A tamper-evident ledger of camera uploads. Every error answers the JSON \
                       `ErrorBody` (`{\"error\": code, \"message\": text}`); 5xx answers hide their \
                       cause. See the README's HTTP API table for the prose of each route."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "ingest", description = "Cameras upload images."),
        (name = "read", description = "Reading events, verdicts, statistics, keys and checkpoints."),
        (name = "git", description = "git smart HTTP: clone the ledger (readers), push images (cameras)."),
        (name = "dashboard", description = "The live dashboard and its session."),
        (name = "operations", description = "Probes and metrics."),
        (name = "docs", description = "This description and its browsable UI.")
    )
)]
pub(crate) struct ApiDoc;

/// `bearer`: `Authorization: Bearer <token>` (camera, auditor or admin, as each route says);
/// `basic`: the token as the Basic password (git only); `session`: the dashboard's cookie.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `camledger cameras add` or `camledger tokens add`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "git routes only: the token as the password (a camera pushing: its camera id as the user).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::dashboard::COOKIE,
                "The dashboard's session, from `POST /login`.",
            ))),
        );
    }
}

/// 5xx answers any route can give: the cause is logged, never sent.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only its responses are used, in `#[utoipa::path]`.
pub(crate) enum ServerErrors {
    /// `internal`: an unexpected failure, logged with its cause.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `unavailable` or `busy`: the ledger or a store cannot serve now; retry after `Retry-After`.
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait")))]
    Unavailable(ErrorBody),
}

/// Raw bytes: an image, a git pack, a file. (`Vec<u8>` would be described as an array of
/// integers.)
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only its schema is used, in `#[utoipa::path]`.
pub(crate) struct Binary(Vec<u8>);

/// The document as served, made once from the router it describes (a clone shares the bytes).
#[derive(Clone)]
pub(crate) struct Document(Bytes);

impl Document {
    pub(crate) fn new(openapi: &utoipa::openapi::OpenApi) -> Self {
        Self(openapi.to_pretty_json().expect("an OpenAPI document serialises").into())
    }
}

/// Where Swagger UI lives; `/docs` redirects to its page.
const DOCS_PAGE: &str = "/docs/index.html";

/// Swagger UI's settings, written into its `swagger-initializer.js`: this server's document,
/// and no validator badge (it would load an image from swagger.io).
static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none")));

/// Swagger UI's policy: its scripts, styles and the document from this origin only; inline
/// styles and `data:` images because its bundle uses them; no inline script, no framing.
pub(crate) const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                                   img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                                   form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(openapi_json)).routes(routes!(docs)).routes(routes!(docs_file))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 description of every route", body = serde_json::Value))
)]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], document.0).into_response()
}

/// Swagger UI: redirects to its page.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 303, description = "To `/docs/index.html`", headers(("Location" = String))))
)]
async fn docs() -> Redirect {
    Redirect::to(DOCS_PAGE)
}

/// Swagger UI's page and files, compiled into the binary; the page reads `/openapi.json`.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    params(("file" = String, Path, description = "`index.html`, `swagger-ui-bundle.js`, `swagger-ui.css`, …")),
    responses(
        (status = 200, description = "The file, under the docs' Content-Security-Policy", content(
            (String = "text/html"), (String = "text/javascript"), (String = "text/css"), (Binary = "image/png")
        )),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
        ServerErrors
    )
)]
async fn docs_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    let found = match utoipa_swagger_ui::serve(&file, Arc::clone(&SWAGGER_CONFIG)) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(ApiError::not_found(format!("no file {file:?} in the docs"))),
        Err(e) => return Err(ApiError::internal(anyhow::anyhow!("serving Swagger UI's {file:?}: {e}"))),
    };
    // The page is checked on every visit; its files for five minutes, as the dashboard's.
    let cache = if file == "index.html" { "no-cache" } else { "public, max-age=300" };
    let mut response = (
        crate::dashboard::browser_headers(DOCS_CSP, cache),
        // The embedded files are served from the binary without a copy.
        match found.bytes {
            Cow::Borrowed(bytes) => Bytes::from_static(bytes),
            Cow::Owned(bytes) => Bytes::from(bytes),
        },
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, found.content_type.parse().map_err(ApiError::internal)?);
    if found.gzpipped {
        headers.insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_routes_that_take_the_session_cookie_are_the_ones_documented_with_it() {
        let document = serde_json::to_value(super::super::api().into_openapi()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (_, operation) in item.as_object().unwrap() {
                let security = operation["security"].as_array().into_iter().flatten();
                if security.into_iter().any(|s| s.get("session").is_some()) && path != "/logout" {
                    documented.insert(path.as_str());
                }
            }
        }
        // `POST /logout` reads the cookie only to end its session.
        assert_eq!(documented, BTreeSet::from(crate::auth::SESSION_ROUTES));
    }
}
