//! The operator console and the admin API's OpenAPI document, both served
//! by the admin listener.
//!
//! The console is a handful of static files (`console/` in the source tree:
//! HTML, CSS and JavaScript modules, no build step) embedded in the binary.
//! It reads and changes nothing itself: the page asks for the admin token
//! once, keeps it in the tab's `sessionStorage`, and calls `/api/v1/*` with
//! it like any other client. So the files are served without a token; every
//! answer carries a strict `Content-Security-Policy` (scripts, styles and
//! fetches from this origin only, no inline script or style, no framing),
//! `X-Frame-Options: DENY` and `X-Content-Type-Options: nosniff`. The pages
//! put untrusted text (bodies, headers, error texts) into the DOM as text,
//! never as HTML.
//!
//! `/api/v1/openapi.json` is `docs/openapi.json`, byte for byte. It is
//! public like the console's files: it describes the API and holds nothing
//! secret.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};

use crate::answer::ApiError;

/// The console's path prefix on the admin listener.
pub const PREFIX: &str = "/console/";

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The OpenAPI 3.1 document of the admin API (`docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

/// The policy every console answer carries: everything from this origin
/// only, no inline script or style, no plugins, forms or framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its name under [`PREFIX`] (`index.html` is also served at the prefix).
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

/// JavaScript modules' type.
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("subscribers.js", JS),
    asset!("events.js", JS),
    asset!("dead-letters.js", JS),
];

/// Each asset's strong ETag (a digest of its bytes), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Adds the console's security headers.
fn secure(response: &mut Response<Full<Bytes>>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// Answers a request for `/console` or anything under [`PREFIX`].
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let mut response = answer(method, path, headers);
    secure(&mut response);
    response
}

fn answer(method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed("GET, HEAD").into_response();
    }
    let name = match path.strip_prefix(PREFIX) {
        None => {
            // `/console` itself: relative links in the page need the slash.
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static(PREFIX));
            return response;
        }
        Some("") => "index.html",
        Some(name) => name,
    };
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::NotFound("no such console file".into()).into_response();
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Full::new(Bytes::from_static(asset.body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("hex digest is a valid header value"),
    );
    // Revalidate every time (a 304 costs nothing): an upgraded gateway
    // never serves a page with yesterday's script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Answers a request for [`OPENAPI_PATH`].
pub fn openapi(method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET {
        return ApiError::MethodNotAllowed("GET").into_response();
    }
    let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
        serve(&Method::GET, path, headers)
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_the_security_headers() {
        for asset in ASSETS {
            let response = get(&format!("{PREFIX}{}", asset.name), &HeaderMap::new());
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(h.contains_key(header::ETAG));
        }
        let index = get(PREFIX, &HeaderMap::new());
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn a_matching_etag_answers_304_and_unknown_files_404_with_the_headers() {
        let first = get("/console/app.js", &HeaderMap::new());
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, first.headers()[header::ETAG].clone());
        let again = get("/console/app.js", &headers);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::X_FRAME_OPTIONS], "DENY");
        let missing = get("/console/nope.js", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        let post = serve(&Method::POST, PREFIX, &HeaderMap::new());
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let bare = get("/console", &HeaderMap::new());
        assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(bare.headers()[header::LOCATION], PREFIX);
    }

    /// The policy forbids inline script and style, so the files must not
    /// need them: no `<script>` with content, no `style=` attribute, no
    /// `on…=` handler attribute, and no script that writes HTML.
    #[test]
    fn the_files_need_no_inline_script_or_style_and_never_write_html() {
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).expect("UTF-8");
            if asset.name.ends_with(".html") {
                assert!(!text.contains("style="), "{}: style attribute", asset.name);
                assert!(!text.contains("<style"), "{}: style element", asset.name);
                for line in text.lines() {
                    let lower = line.to_ascii_lowercase();
                    assert!(
                        !lower.contains(" onclick=") && !lower.contains(" onload="),
                        "{}: handler attribute",
                        asset.name
                    );
                }
                for (i, _) in text.match_indices("<script") {
                    let tag_end = text[i..].find('>').unwrap() + i;
                    assert!(
                        text[tag_end..].starts_with("></script>"),
                        "{}: inline script",
                        asset.name
                    );
                }
            }
            if asset.name.ends_with(".js") {
                for sink in [
                    "innerHTML",
                    "outerHTML",
                    "insertAdjacentHTML",
                    "document.write",
                ] {
                    assert!(!text.contains(sink), "{} uses {sink}", asset.name);
                }
                assert!(!text.contains("eval("), "{} uses eval", asset.name);
            }
        }
    }

    #[test]
    fn the_openapi_document_is_json_and_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        let response = openapi(&Method::GET);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            openapi(&Method::POST).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
