//! The one place where errors become HTTP answers: the ingress table of
//! DESIGN.md ([`Rejection`]) and the admin API's errors ([`ApiError`]).
//! Every answer has a JSON body; none carries a secret.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::intake::{Accepted, IntakeError};
use crate::store::StoreError;

/// Seconds a sender should wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No route at that path.
    #[error("no route at this path")]
    NotFound,
    /// Only POST is accepted.
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    /// The client address is outside `allow_ips`.
    #[error("client address not allowed")]
    Forbidden,
    /// Token missing or wrong, or signature invalid.
    #[error("unauthorized")]
    Unauthorized,
    /// Body over `max_body_bytes`.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The body did not arrive in time.
    #[error("request body not received in time")]
    BodyTimeout,
    /// Not JSON or a required field missing; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The store cannot take it now; the sender should retry.
    #[error("temporarily unable to record the callback; retry later")]
    Unavailable,
    /// Bodies of senders not yet authenticated already hold all the room
    /// `server.max_unauthenticated_body_bytes[_per_connection]` allow.
    #[error("too many unauthenticated request bodies in progress; retry later")]
    Busy,
    /// The submit proxy could not reach muapi.
    #[error("{0}")]
    BadGateway(String),
}

impl Rejection {
    /// The `outcome` label of `hookrelay_ingress_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::Forbidden => "forbidden",
            Rejection::Unauthorized => "unauthorized",
            Rejection::TooLarge(_) => "too_large",
            Rejection::BodyTimeout => "timeout",
            Rejection::Invalid(_) => "invalid",
            Rejection::Unavailable => "unavailable",
            Rejection::Busy => "busy",
            Rejection::BadGateway(_) => "upstream_unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::Unavailable | Rejection::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json(
            self.status(),
            &serde_json::json!({ "error": self.to_string() }),
        );
        let headers = response.headers_mut();
        match self {
            Rejection::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Rejection::Unavailable | Rejection::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Rejection::TooLarge(_) | Rejection::BodyTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<IntakeError> for Rejection {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(reason) => Rejection::Invalid(reason),
            IntakeError::BadSignature(_) => Rejection::Unauthorized,
            IntakeError::Store(StoreError::Overloaded) => Rejection::Unavailable,
            IntakeError::Store(e) => {
                tracing::error!(error = %e, "store refused a callback; answered 503");
                Rejection::Unavailable
            }
        }
    }
}

/// The 200 answer: `accepted` or `duplicate`, with the event id.
pub fn accepted(accepted: &Accepted) -> Response<Full<Bytes>> {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "status": if accepted.duplicate { "duplicate" } else { "accepted" },
            "event_id": accepted.event_id,
        }),
    )
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bearer token missing or wrong.
    #[error("unauthorized: send Authorization: Bearer <admin.token>")]
    Unauthorized,
    /// No `admin.token` is configured, so the API is closed.
    #[error("the admin API is closed: set admin.token in the config to open it")]
    Closed,
    /// No such endpoint or object.
    #[error("{0}")]
    NotFound(String),
    /// Wrong method for the endpoint.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// A parameter or body is wrong; the message says which.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the running state; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// A reload was refused; every problem is listed.
    #[error("the new config was refused")]
    Reload(Vec<String>),
}

impl ApiError {
    /// The HTTP answer.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Closed => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) | ApiError::Reload(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = match &self {
            ApiError::Reload(problems) => {
                serde_json::json!({ "error": self.to_string(), "problems": problems })
            }
            _ => serde_json::json!({ "error": self.to_string() }),
        };
        let mut response = json(status, &body);
        match self {
            ApiError::MethodNotAllowed(allow) => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
