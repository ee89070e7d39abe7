//! `hookrelay dead-letters …`: a small client of the admin API.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The URL is not usable.
    #[error("invalid admin URL: {0}")]
    Url(String),
    /// The request could not be made.
    #[error("cannot reach the admin API: {0}")]
    Transport(String),
    /// The API answered with an error.
    #[error("admin API answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its `error` field.
        message: String,
    },
}

/// Calls the admin API and returns the JSON answer.
pub async fn call(
    admin: &str,
    token: Option<&str>,
    method: Method,
    path_and_query: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let url = format!("{}{}", admin.trim_end_matches('/'), path_and_query);
    let uri: http::Uri = url.parse().map_err(|_| CliError::Url(admin.to_string()))?;
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(v) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .map_err(|e| CliError::Url(e.to_string()))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .map_err(|e| CliError::Transport(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Transport(e.to_string()))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError::Api {
            status: status.as_u16(),
            message: value
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(value)
}

/// A readable table of dead letters.
pub fn dead_letter_table(answer: &Value) -> String {
    let mut out = format!(
        "{:<40} {:<12} {:<12} {:>8}  {:<24} REASON\n",
        "ID", "ROUTE", "SUBSCRIBER", "ATTEMPTS", "LAST"
    );
    let empty = Vec::new();
    let letters = answer
        .get("dead_letters")
        .and_then(|d| d.as_array())
        .unwrap_or(&empty);
    for letter in letters {
        let text = |key: &str| {
            letter
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let last = letter
            .get("history")
            .and_then(|h| h.as_array())
            .and_then(|h| h.last())
            .map(|a| {
                match (
                    a.get("status").and_then(|s| s.as_u64()),
                    a.get("error").and_then(|e| e.as_str()),
                ) {
                    (Some(status), _) => format!("HTTP {status}"),
                    (None, Some(error)) => error.chars().take(24).collect(),
                    _ => String::new(),
                }
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<40} {:<12} {:<12} {:>8}  {:<24} {}\n",
            text("id"),
            text("route"),
            text("subscriber"),
            letter.get("attempts").and_then(|a| a.as_u64()).unwrap_or(0),
            last,
            text("dead_reason"),
        ));
    }
    out.push_str(&format!("{} dead letter(s)\n", letters.len()));
    out
}
