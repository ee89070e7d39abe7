//! muapi.ai task callbacks (see `shared/seed/muapi-webhooks.txt`).
//!
//! Only `id` and `status` are required, each a non-empty string. Every other
//! field (`outputs`, `urls`, `has_nsfw_contents`, `error`, `executionTime`,
//! `timings`, and fields muapi may add later) may be absent, null or of any
//! type: the body is forwarded byte for byte, never re-serialised.

use serde_json::Value;

use super::IntakeError;

/// The idempotency key of a muapi callback: `id` and `status`, so a
/// `failed` then a `completed` for the same task are two events.
pub fn key(body: &Value) -> Result<String, IntakeError> {
    let object = body
        .as_object()
        .ok_or_else(|| IntakeError::Invalid("body must be a JSON object".into()))?;
    let id = required(object, "id")?;
    let status = required(object, "status")?;
    Ok(format!("{id}\n{status}"))
}

fn required<'a>(
    object: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, IntakeError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(IntakeError::Invalid(format!(
            "required field `{field}` is missing"
        ))),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(IntakeError::Invalid(format!(
            "required field `{field}` is empty"
        ))),
        Some(_) => Err(IntakeError::Invalid(format!(
            "required field `{field}` must be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_payload_is_accepted() {
        let body = json!({
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
        });
        assert_eq!(
            key(&body).unwrap(),
            "6a1e0c4e-3f1b-4a7e-9d43-2b0c8f6e1a11\ncompleted"
        );
    }

    #[test]
    fn minimal_payload_is_accepted() {
        assert!(key(&json!({"id": "t", "status": "failed"})).is_ok());
    }

    #[test]
    fn missing_or_wrong_required_fields_are_named() {
        let e = key(&json!({"status": "completed"})).unwrap_err();
        assert!(e.to_string().contains("`id` is missing"));
        let e = key(&json!({"id": "t", "status": ""})).unwrap_err();
        assert!(e.to_string().contains("`status` is empty"));
        let e = key(&json!({"id": 5, "status": "completed"})).unwrap_err();
        assert!(e.to_string().contains("`id` must be a string"));
        let e = key(&json!(["id"])).unwrap_err();
        assert!(e.to_string().contains("object"));
    }
}
