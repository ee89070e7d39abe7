//! muapi.ai task callbacks (see `shared/seed/muapi-webhooks.txt`).
//!
//! Only `id` and `status` are required, each a non-empty string. Every other
//! field (`outputs`, `urls`, `has_nsfw_contents`, `error`, `executionTime`,
//! `timings`, and fields muapi may add later) may be absent, null or of any
//! type: the body is forwarded byte for byte, never re-serialised.
//!
//! The body is checked by [`super::json::check`] (the validity rule every
//! source shares), which on the way borrows the two fields needed here and
//! keeps nothing else, so the common path builds no JSON tree.

use std::borrow::Cow;

use super::json::{self, Field};
use super::IntakeError;

/// The fields hookrelay reads from a muapi callback.
#[derive(Debug)]
pub struct Head<'a> {
    /// The task id.
    pub id: Cow<'a, str>,
    /// `completed`, `failed`, or whatever muapi sends.
    pub status: Cow<'a, str>,
}

impl Head<'_> {
    /// The idempotency key: `id` and `status`, so a `failed` then a
    /// `completed` for the same task are two events.
    pub fn key(&self) -> String {
        format!("{}\n{}", self.id, self.status)
    }
}

/// Validates a muapi body and returns its id and status.
pub fn parse(body: &[u8]) -> Result<Head<'_>, IntakeError> {
    let top = json::check(body)?;
    if !top.object {
        return Err(IntakeError::Invalid("body must be a JSON object".into()));
    }
    Ok(Head {
        id: required(top.id, "id", MAX_ID_BYTES)?,
        status: required(top.status, "status", MAX_STATUS_BYTES)?,
    })
}

/// The longest task id accepted, in bytes. muapi's are UUIDs (36); the
/// bound keeps an id storable and indexable by every store (PostgreSQL
/// refuses index entries over about 2.7 KB, which would fail the whole
/// group commit the callback shares with others), and admits every id the
/// admin API takes for an expected task (256 characters of up to 4 bytes).
pub const MAX_ID_BYTES: usize = 1024;

/// The longest status accepted, in bytes (muapi's are single words).
pub const MAX_STATUS_BYTES: usize = 64;

fn required<'a>(
    field: Option<Field<'a>>,
    name: &str,
    max: usize,
) -> Result<Cow<'a, str>, IntakeError> {
    match field {
        None => Err(IntakeError::Invalid(format!(
            "required field `{name}` is missing"
        ))),
        Some(Field::Text(s)) if s.len() > max => Err(IntakeError::Invalid(format!(
            "required field `{name}` is longer than {max} bytes"
        ))),
        // A control character (NUL above all) cannot be stored as text by
        // PostgreSQL, and is in no muapi id or status.
        Some(Field::Text(s)) if s.chars().any(char::is_control) => Err(IntakeError::Invalid(
            format!("required field `{name}` contains a control character"),
        )),
        Some(Field::Text(s)) if !s.is_empty() => Ok(s),
        Some(Field::Text(_)) => Err(IntakeError::Invalid(format!(
            "required field `{name}` is empty"
        ))),
        Some(Field::Other) => Err(IntakeError::Invalid(format!(
            "required field `{name}` must be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str) -> Result<String, String> {
        parse(body.as_bytes())
            .map(|h| h.key())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn seed_payload_is_accepted() {
        let body = r#"{
            "id": "6a1e0c4e-3f1b-4a7e-9d43-2b0c8f6e1a11",
            "outputs": ["https://cdn.example/out.png"],
            "urls": {"get": "https://api.muapi.ai/api/v1/predictions/x/result"},
            "has_nsfw_contents": [false],
            "status": "completed",
            "created_at": "2026-11-27T00:00:00Z",
            "error": null,
            "executionTime": 1234,
            "timings": {"inference": 1.2},
            "brand_new_field": {"nested": true}
        }"#;
        assert_eq!(
            parse_str(body).unwrap(),
            "6a1e0c4e-3f1b-4a7e-9d43-2b0c8f6e1a11\ncompleted"
        );
    }

    #[test]
    fn minimal_payload_and_escapes_are_accepted() {
        assert!(parse_str(r#"{"id": "t", "status": "failed"}"#).is_ok());
        assert_eq!(
            parse_str(r#"{"id": "a\"b", "status": "ok"}"#).unwrap(),
            "a\"b\nok"
        );
    }

    #[test]
    fn other_fields_may_have_any_type() {
        let body = r#"{"id":"t","status":"completed","outputs":"not-a-list","urls":null,"has_nsfw_contents":7,"timings":[1,2]}"#;
        assert!(parse_str(body).is_ok());
    }

    #[test]
    fn missing_or_wrong_required_fields_are_named() {
        assert!(parse_str(r#"{"status": "completed"}"#)
            .unwrap_err()
            .contains("`id` is missing"));
        assert!(parse_str(r#"{"id": null, "status": "completed"}"#)
            .unwrap_err()
            .contains("`id` is missing"));
        let long = format!(r#"{{"id": "{}", "status": "completed"}}"#, "x".repeat(1025));
        assert!(parse_str(&long)
            .unwrap_err()
            .contains("longer than 1024 bytes"));
        // The longest id the admin API takes for an expected task fits.
        let fits = format!(r#"{{"id": "{}", "status": "completed"}}"#, "é".repeat(256));
        assert!(parse_str(&fits).is_ok());
        let status = format!(r#"{{"id": "t", "status": "{}"}}"#, "s".repeat(65));
        assert!(parse_str(&status)
            .unwrap_err()
            .contains("`status` is longer than 64"));
        for bad in [r#""a\u0000b""#, r#""a\nb""#, r#""\u007f""#] {
            let body = format!(r#"{{"id": {bad}, "status": "completed"}}"#);
            let err = parse_str(&body).unwrap_err();
            assert!(err.contains("`id` contains a control character"), "{err}");
            // Named, never quoted.
            assert!(
                err.ends_with("required field `id` contains a control character"),
                "{err}"
            );
        }
        assert!(parse_str(r#"{"id": "t", "status": ""}"#)
            .unwrap_err()
            .contains("`status` is empty"));
        assert!(parse_str(r#"{"id": 5, "status": "completed"}"#)
            .unwrap_err()
            .contains("`id` must be a string"));
        assert!(parse_str(r#"["id"]"#).unwrap_err().contains("object"));
    }

    #[test]
    fn invalid_json_is_reported_as_such() {
        assert!(parse_str(r#"{"id": "t", "status": "completed""#)
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse_str(r#"{"id": "t", "status": "completed"} trailing"#)
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
