//! The admin listener and its OpenAPI document (docs/openapi.json) agree on
//! what needs the token, and the console's files come with their security
//! headers. (`.ci/openapi-conformance` checks every operation's answers
//! against the document with schemathesis; these run in `cargo test`.)

mod common;

use common::*;
use http::StatusCode;

const TOKEN: &str = "openapi-admin-token";

async fn gateway(admin_token: bool) -> TestGateway {
    let token = if admin_token {
        format!("  token: {TOKEN}\n")
    } else {
        String::new()
    };
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
{token}store:
  path: "{{store}}"
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: ["ingress-token"]
    subscribers:
      - name: app
        url: http://127.0.0.1:9/app
"#
    );
    TestGateway::start(&yaml, None).await
}

fn document() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Every documented (method, path) with a security requirement, its path
/// parameters filled with a syntactically valid value.
fn secured_operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let global = !doc["security"].as_array().unwrap().is_empty();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = match operation.get("security") {
                Some(s) => !s.as_array().unwrap().is_empty(),
                None => global,
            };
            if secured {
                let concrete = path
                    .replace("{event_id}", "HXRp7L1ua8jnMpLOmnKSjA")
                    .replace("{id}", "HXRp7L1ua8jnMpLOmnKSjA.app");
                out.push((method.to_uppercase(), concrete));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_served_document_is_docs_openapi_json_and_needs_no_token() {
    let gw = gateway(true).await;
    let admin = TestClient::plain(gw.admin);
    let served = admin.send_raw("GET", "/api/v1/openapi.json").await;
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(served, file, "served bytes differ from docs/openapi.json");
    let answer = admin.send("GET", "/api/v1/openapi.json", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(answer.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let post = admin.send("POST", "/api/v1/openapi.json", &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET");
}

/// Every operation the document says needs the token answers 401 (with
/// `WWW-Authenticate: Bearer`) without it and with a wrong one, and 403
/// when no admin.token is configured; the others answer without one.
#[tokio::test]
async fn documented_security_matches_the_listener() {
    let doc = document();
    let operations = secured_operations(&doc);
    assert!(operations.len() >= 10, "{operations:?}");
    let open = gateway(true).await;
    let closed = gateway(false).await;
    let open_admin = TestClient::plain(open.admin);
    let closed_admin = TestClient::plain(closed.admin);
    for (method, path) in &operations {
        for headers in [vec![], vec![("authorization", "Bearer wrong-token")]] {
            let answer = open_admin.send(method, path, &headers, "{}").await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {headers:?}"
            );
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
            assert!(answer.body["error"].is_string());
        }
        let auth = format!("Bearer {TOKEN}");
        let answer = closed_admin
            .send(method, path, &[("authorization", &auth)], "{}")
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert!(answer.body["error"]
            .as_str()
            .unwrap()
            .contains("admin.token"));
    }
    for path in ["/healthz", "/readyz", "/metrics", "/console/"] {
        let documented = &doc["paths"][path]["get"];
        assert_eq!(documented["security"], serde_json::json!([]), "{path}");
        let answer = open_admin.send("GET", path, &[], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    // A wrong method on a probe is a 405, as the document's intro says.
    let answer = open_admin.send("POST", "/healthz", &[], "").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "GET");
}

#[tokio::test]
async fn console_files_carry_the_security_headers() {
    let gw = gateway(true).await;
    let admin = TestClient::plain(gw.admin);
    for path in [
        "/console/",
        "/console/app.js",
        "/console/style.css",
        "/console/nope",
    ] {
        let answer = admin.send("GET", path, &[], "").await;
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(answer.headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(
            answer.headers["x-content-type-options"], "nosniff",
            "{path}"
        );
    }
    let page = admin.send("GET", "/console/", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let etag = page.headers["etag"].to_str().unwrap().to_string();
    let again = admin
        .send("GET", "/console/", &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let script = admin.send("GET", "/console/app.js", &[], "").await;
    assert_eq!(
        script.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    let bare = admin.send("GET", "/console", &[], "").await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers["location"], "/console/");
    let missing = admin.send("GET", "/console/nope", &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// `before` is what `next_before` writes (the document's pattern): a
/// number below 2^63 (PostgreSQL's bigint) with no sign or leading zero.
/// Anything else is a 400 on every store, never a store error.
#[tokio::test]
async fn event_cursors_are_canonical_numbers_below_2_63() {
    let gw = gateway(true).await;
    let admin = TestClient::plain(gw.admin);
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    for ok in ["", "0", "9223372036854775807"] {
        let answer = admin
            .send("GET", &format!("/api/v1/events?before={ok}"), &headers, "")
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "before={ok}: {}",
            answer.body
        );
    }
    for bad in [
        "00",
        "+5",
        "9223372036854775808",
        "18446744073709551615",
        "x",
    ] {
        let answer = admin
            .send("GET", &format!("/api/v1/events?before={bad}"), &headers, "")
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "before={bad}");
    }
}
