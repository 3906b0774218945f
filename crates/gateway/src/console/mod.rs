//! The console (contract section 3: `/ui` on the admin listener).
//!
//! Three static files compiled into the binary: a page, its script and its stylesheet.
//! They hold no data and need no token to load; everything they show comes from the
//! `/admin/v1` API, called by the script with the token the operator signs in with, so
//! the console sees exactly what that token may see and the API's RBAC is the only gate.
//! The token is kept in the tab's `sessionStorage` (gone when the tab closes), never in
//! a cookie, so no other site can make the browser use it (no CSRF).
//!
//! Every response carries a strict Content-Security-Policy: scripts, styles and fetches
//! only from this origin, no inline script or style, no framing. The script builds the
//! page with `textContent` only, so a tenant name, a user id or a record's tags cannot
//! inject markup.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The policy every console response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `/ui`, `/ui/` and the two assets; anything else under `/ui/` is a plain 404.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/{*rest}",
            get(|| async {
                let mut r = (StatusCode::NOT_FOUND, "no such console page").into_response();
                secure(&mut r);
                r
            }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    // Revalidated on every load, so an upgraded gateway never runs an old script.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(&mut r);
    r
}

fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_no_inline_code() {
        assert!(INDEX.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert!(INDEX.contains(r#"<link rel="stylesheet" href="/ui/app.css">"#));
        // CSP forbids inline script and style: the page must not rely on them.
        assert_eq!(INDEX.matches("<script").count(), 1);
        assert!(!INDEX.contains("<style"));
        assert!(!INDEX.contains(" style="));
        // No inline event handler (`onclick=` and the like).
        let handler = INDEX.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline handler: on{handler:?}");
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "app.js uses {sink}");
        }
        // The token lives in the tab only.
        assert!(!SCRIPT.contains("localStorage"));
        assert!(!SCRIPT.contains("document.cookie"));
    }
}
