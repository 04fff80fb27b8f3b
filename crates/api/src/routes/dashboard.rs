//! The live dashboard: `GET /` (the page), `GET /assets/{name}` (its script, style and the
//! vendored uPlot, compiled into the binary), `POST /login` and `POST /logout`.
//!
//! The page is static; its script reads `GET /v1/stats`, `GET /v1/events` and
//! `GET /v1/stream` with the session cookie that `POST /login` sets. No front-end build step
//! and nothing from another origin: the Content-Security-Policy allows scripts, styles,
//! images and connections from this origin only, no inline code at all, and no framing.
//!
//! Sign-in trades an auditor or admin token for a session (see `crate::dashboard`); a camera
//! token is refused (403). `POST /login` and `POST /logout` refuse requests from another
//! origin (`Origin`, `Sec-Fetch-Site`), so another site cannot sign a browser in or out.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dashboard::{browser_headers, cookie, COOKIE, SESSION_TTL};
use crate::error::{ApiError, ErrorBody};
use crate::registry::Role;
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(page)).routes(routes!(asset)).routes(routes!(login)).routes(routes!(logout))
}

/// The page's policy: everything from this origin only, no inline script or style, no
/// plugins, no framing, forms post only here.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");

/// The static assets: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    ("icon.svg", "image/svg+xml", include_bytes!("../../assets/dashboard/icon.svg")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/dashboard/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../assets/dashboard/app.css")),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/vendor/uplot/uPlot.min.css")),
];

fn hardened(content_type: &'static str, cache: &'static str) -> impl axum::response::IntoResponseParts {
    ([(header::CONTENT_TYPE, content_type)], browser_headers(PAGE_CSP, cache))
}

/// The live dashboard (the page signs in).
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "The page, under a strict Content-Security-Policy", body = String,
               content_type = "text/html"))
)]
async fn page() -> Response {
    (hardened("text/html; charset=utf-8", "no-cache"), INDEX_HTML).into_response()
}

/// The dashboard's script, styles, icon and the vendored uPlot, compiled into the binary.
#[utoipa::path(
    get,
    path = "/assets/{name}",
    tag = "dashboard",
    params(("name" = String, Path, description = "`app.js`, `app.css`, `icon.svg`, `uPlot.iife.min.js`, `uPlot.min.css`")),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml")
        )),
        (status = 404, description = "`not_found`: no such asset", body = ErrorBody)
    )
)]
async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, bytes) =
        ASSETS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| ApiError::not_found(format!("no asset {name:?}")))?;
    Ok((hardened(content_type, "public, max-age=300"), *bytes).into_response())
}

/// Refuses a sign-in or sign-out sent by another site (login CSRF): browsers send `Origin`
/// on every POST and `Sec-Fetch-Site` too; clients that send neither (curl) pass.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = || ApiError::forbidden("cross-origin sign-in requests are refused; sign in on this server's own page");
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return Err(refuse());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).ok_or_else(refuse)?;
        let origin = origin.to_str().map_err(|_| refuse())?;
        let ours = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if ours != Some(host) {
            return Err(refuse());
        }
    }
    Ok(())
}

/// Longest sign-in body read (a token is 68 characters).
const MAX_LOGIN_BODY: usize = 4096;

fn session_cookie(value: &str, max_age: u64) -> HeaderValue {
    let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&cookie).expect("a session id is base64url")
}

/// The form field `token`: a session cookie for an auditor or admin.
#[utoipa::path(
    post,
    path = "/login",
    tag = "dashboard",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
                 description = "`token=<auditor or admin token>`, at most 4 KiB"),
    responses(
        (status = 200, description = "`{\"name\", \"role\"}`, and the `camledger_session` cookie (HttpOnly, \
                                      SameSite=Strict, 8 hours)", body = serde_json::Value,
         headers(("Set-Cookie" = String))),
        (status = 400, description = "`missing_token`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: unknown or revoked token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a camera token, or a request from another origin", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not a form", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all)]
async fn login(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "sign in with a form: Content-Type application/x-www-form-urlencoded, field token",
        ));
    }
    let body = axum::body::to_bytes(body, MAX_LOGIN_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a sign-in form is at most {MAX_LOGIN_BODY} bytes"),
        )
    })?;
    let token = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_token", "the form needs a field token (an auditor or admin token)")
        })?;
    let principal =
        state.registry.authenticate(&token).await?.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    tracing::Span::current().record("principal", principal.name.as_str());
    match principal.role {
        Role::Auditor | Role::Admin => {}
        Role::Camera => {
            return Err(ApiError::forbidden(
                "a camera token cannot sign in to the dashboard; use an auditor or admin token \
                 (camledger tokens add NAME --role auditor)",
            ))
        }
    }
    let id = state.dashboard.sessions.create(crate::registry::token_hash(&token));
    let mut response = Json(json!({ "name": principal.name, "role": principal.role.as_str() })).into_response();
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, session_cookie(&id, SESSION_TTL.as_secs()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Ends the session of the cookie sent (if any) and clears the cookie.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "dashboard",
    security((), ("session" = [])),
    responses(
        (status = 200, description = "`{\"signed_out\": true}`; the cookie is cleared", body = serde_json::Value,
         headers(("Set-Cookie" = String))),
        (status = 403, description = "`forbidden`: a request from another origin", body = ErrorBody)
    )
)]
async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    if let Some(id) = cookie(&headers, COOKIE) {
        state.dashboard.sessions.end(id);
    }
    let mut response = Json(json!({ "signed_out": true })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn sign_in_from_another_site_is_refused() {
        assert!(same_origin(&headers(&[])).is_ok(), "curl sends neither header");
        assert!(same_origin(&headers(&[("host", "a:1"), ("origin", "http://a:1")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("host", "a:1"), ("origin", "http://evil")])).is_err());
        assert!(same_origin(&headers(&[("host", "a:1"), ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
    }

    #[test]
    fn the_session_cookie_is_httponly_and_strict() {
        let cookie = session_cookie("abc", 60);
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"));
    }
}
