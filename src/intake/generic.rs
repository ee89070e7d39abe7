//! Generic JSON webhooks: any JSON object, keyed as DESIGN.md says — the
//! `webhook-id` header, else `Idempotency-Key`, else the route's configured
//! `idempotency_key`, else the SHA-256 of the body.

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::IntakeError;
use crate::config::KeySpec;

/// The idempotency key of a generic callback.
pub fn key(
    body: &Value,
    raw: &[u8],
    headers: &HeaderMap,
    spec: Option<&KeySpec>,
) -> Result<String, IntakeError> {
    if !body.is_object() {
        return Err(IntakeError::Invalid("body must be a JSON object".into()));
    }
    for name in ["webhook-id", "idempotency-key"] {
        if let Some(value) = header(headers, name) {
            return Ok(format!("{name}:{value}"));
        }
    }
    match spec {
        Some(KeySpec::Header(name)) => header(headers, name.as_str())
            .map(|v| format!("header:{v}"))
            .ok_or_else(|| IntakeError::Invalid(format!("idempotency header `{name}` is missing"))),
        Some(KeySpec::Json(pointer)) => match body.pointer(pointer) {
            None | Some(Value::Null) => Err(IntakeError::Invalid(format!(
                "idempotency key at `{pointer}` is missing"
            ))),
            Some(Value::String(s)) => Ok(format!("json:{s}")),
            Some(other) => Ok(format!("json:{other}")),
        },
        None => Ok(format!("sha256:{:x}", Sha256::digest(raw))),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn precedence_webhook_id_then_idempotency_key_then_spec_then_hash() {
        let body = json!({"data": {"id": 42}});
        let spec = KeySpec::Json("/data/id".into());
        let both = headers(&[("webhook-id", "msg_1"), ("idempotency-key", "k")]);
        assert_eq!(
            key(&body, b"{}", &both, Some(&spec)).unwrap(),
            "webhook-id:msg_1"
        );
        let idem = headers(&[("idempotency-key", "k")]);
        assert_eq!(
            key(&body, b"{}", &idem, Some(&spec)).unwrap(),
            "idempotency-key:k"
        );
        assert_eq!(
            key(&body, b"{}", &HeaderMap::new(), Some(&spec)).unwrap(),
            "json:42"
        );
        let hashed = key(&body, b"{}", &HeaderMap::new(), None).unwrap();
        assert!(hashed.starts_with("sha256:"));
        assert_eq!(hashed, key(&body, b"{}", &HeaderMap::new(), None).unwrap());
    }

    #[test]
    fn configured_key_missing_is_invalid() {
        let spec = KeySpec::Json("/nope".into());
        let e = key(&json!({}), b"{}", &HeaderMap::new(), Some(&spec)).unwrap_err();
        assert!(e.to_string().contains("/nope"));
    }

    #[test]
    fn non_objects_are_invalid() {
        assert!(key(&json!([1]), b"[1]", &HeaderMap::new(), None).is_err());
    }
}
