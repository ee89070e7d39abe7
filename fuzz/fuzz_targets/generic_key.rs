//! Generic routes' idempotency key (`intake::generic::key`) with the
//! operator's `idempotency_key` spec (`KeySpec::parse`), as intake runs
//! them: the strict check, serde_json's tree, then the key.
//!
//! Input, one field per line: the spec text (`header:NAME`, `json:/ptr`;
//! empty for none), the `webhook-id` header, the `Idempotency-Key` header,
//! a value for the spec's header (empty lines mean absent), then the body.
//!
//! Invariants: nothing panics; the same request always gives the same key;
//! the precedence is `webhook-id`, then `Idempotency-Key`, then the spec,
//! then the body's SHA-256; a JSON-pointer key is the pointed-at value.
#![no_main]

use std::fmt::Write as _;

use hookrelay::config::KeySpec;
use hookrelay::intake::{generic, json};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(5, |b| *b == b'\n');
    let spec_text = lines.next().unwrap_or_default();
    let webhook_id = lines.next().unwrap_or_default();
    let idempotency_key = lines.next().unwrap_or_default();
    let custom = lines.next().unwrap_or_default();
    let body = lines.next().unwrap_or_default();

    let spec = std::str::from_utf8(spec_text)
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|s| KeySpec::parse(s).ok());
    let mut headers = HeaderMap::new();
    let put = |headers: &mut HeaderMap, name: HeaderName, value: &[u8]| {
        if let (false, Ok(v)) = (value.is_empty(), HeaderValue::from_bytes(value)) {
            headers.insert(name, v);
        }
    };
    put(
        &mut headers,
        HeaderName::from_static("webhook-id"),
        webhook_id,
    );
    put(
        &mut headers,
        HeaderName::from_static("idempotency-key"),
        idempotency_key,
    );
    if let Some(KeySpec::Header(name)) = &spec {
        // A spec naming `webhook-id` or `idempotency-key` keeps that value.
        if !headers.contains_key(name) {
            put(&mut headers, name.clone(), custom);
        }
    }

    if json::check(body).is_err() {
        return;
    }
    let tree: Value = serde_json::from_slice(body).expect("the strict check passed");
    let key = generic::key(&tree, body, &headers, spec.as_ref());
    let again = generic::key(&tree, body, &headers, spec.as_ref());
    assert_eq!(
        key.as_ref().ok(),
        again.as_ref().ok(),
        "the key is not stable"
    );
    let Ok(key) = key else {
        return;
    };
    assert!(tree.is_object(), "a key for a body that is not an object");

    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(id) = header("webhook-id") {
        assert_eq!(key, format!("webhook-id:{id}"));
    } else if let Some(k) = header("idempotency-key") {
        assert_eq!(key, format!("idempotency-key:{k}"));
    } else {
        match &spec {
            Some(KeySpec::Header(name)) => {
                let value = header(name.as_str()).expect("a key from the spec's header");
                assert_eq!(key, format!("header:{value}"));
            }
            Some(KeySpec::Json(pointer)) => {
                let value = tree.pointer(pointer).expect("a key from the pointer");
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert!(!value.is_null());
                assert_eq!(key, format!("json:{text}"));
            }
            None => {
                let mut hex = String::new();
                for b in Sha256::digest(body) {
                    write!(hex, "{b:02x}").unwrap();
                }
                assert_eq!(key, format!("sha256:{hex}"));
            }
        }
    }
});
