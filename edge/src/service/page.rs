//! The device's own page (`GET /`): plain HTML, CSS and JavaScript embedded in the binary,
//! so it works on a network with no internet and nothing is fetched from elsewhere. Every
//! response carries a strict Content-Security-Policy: scripts, styles, images and requests
//! only from the device itself, no inline code, no framing.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

/// The policy: only this origin, nothing inline (the page sets styles through the CSSOM,
/// which the policy allows), `blob:` for the downloads the page makes.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // The assets change with the binary; a stale tab reloads them.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /assets/app.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_names_no_other_host() {
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", SCRIPT),
            ("app.css", STYLE),
        ] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name}"
            );
            assert!(
                !text.contains("//cdn") && !text.contains("@import"),
                "{name}"
            );
        }
        // No inline handlers or scripts or styles: the policy would block them anyway.
        for bad in [
            " onclick=",
            " onload=",
            " onerror=",
            " onsubmit=",
            "<script>",
            "style=\"",
        ] {
            assert!(!INDEX.contains(bad), "{bad}");
        }
        assert!(INDEX.contains("<script src=\"/assets/app.js\""));
        assert!(INDEX.contains("name=\"viewport\""), "readable on a phone");
        // The token lives in sessionStorage only, never in a URL or localStorage.
        assert!(SCRIPT.contains("sessionStorage") && !SCRIPT.contains("localStorage"));
        assert!(!SCRIPT.contains("?token") && !SCRIPT.contains("&token"));
    }
}
