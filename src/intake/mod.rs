//! Intake: from an authenticated request body to a durable event.
//!
//! Check the body against the one validity rule of [`json`] and read it
//! (only to find its idempotency key and evaluate filters; it is stored and
//! forwarded byte for byte), derive the stable event id, claim the key in
//! the idempotency cache, append the event and its deliveries to the store
//! and wait for the commit, then hand the new deliveries to the dispatcher.

pub mod generic;
pub mod idempotency;
pub mod json;
pub mod muapi;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{Route, SourceKind};
use crate::delivery::Dispatcher;
use crate::store::{AppendOutcome, NewEvent, Store, StoreError};
use idempotency::{Claim, IdempotencyCache};

/// Why a callback was not accepted (after routing and token checks).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Not JSON, or a required field is missing: the sender must fix it.
    #[error("{0}")]
    Invalid(String),
    /// The inbound signature did not verify.
    #[error("signature: {0}")]
    BadSignature(#[from] crate::signing::VerifyError),
    /// The store could not make it durable: the sender should retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to an accepted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Stable id of the event.
    pub event_id: String,
    /// True when it had been accepted before.
    pub duplicate: bool,
}

/// Headers kept with the event for operators (never credentials).
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "idempotency-key",
    "x-request-id",
];

/// Turns request bodies into durable events.
pub struct Intake {
    store: Arc<dyn Store>,
    cache: Arc<IdempotencyCache>,
    dispatcher: Arc<Dispatcher>,
}

impl Intake {
    /// Builds the intake over a store, a cache and the dispatcher.
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<IdempotencyCache>,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        Self {
            store,
            cache,
            dispatcher,
        }
    }

    /// The idempotency cache (for gauges and the pruner).
    pub fn cache(&self) -> &Arc<IdempotencyCache> {
        &self.cache
    }

    /// Validates, deduplicates and durably records one callback.
    pub async fn accept(
        &self,
        route: &Arc<Route>,
        headers: &HeaderMap,
        body: Bytes,
        received_ms: u64,
    ) -> Result<Accepted, IntakeError> {
        if let Some(secret) = &route.inbound_secret {
            let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            crate::signing::verify(
                secret,
                h("webhook-id"),
                h("webhook-timestamp"),
                h("webhook-signature"),
                &body,
                received_ms / 1000,
            )?;
        }
        // Only after `json::check` passed: the tree then holds every value
        // exactly as a strict parser reads it.
        let parse_tree = || {
            serde_json::from_slice::<serde_json::Value>(&body)
                .map_err(|e| IntakeError::Invalid(format!("body is not valid JSON: {e}")))
        };
        // muapi bodies are skimmed for `id` and `status`; a full tree is
        // built only when a filter needs one (or for generic sources).
        let (key, status, tree) = match route.source {
            SourceKind::Muapi => {
                let head = muapi::parse(&body)?;
                let tree = if route.needs_json {
                    Some(parse_tree()?)
                } else {
                    None
                };
                (head.key(), Some(head.status.into_owned()), tree)
            }
            SourceKind::Generic => {
                json::check(&body)?;
                let tree = parse_tree()?;
                let key = generic::key(&tree, &body, headers, route.key_spec.as_ref())?;
                let status = tree
                    .get("status")
                    .and_then(|s| s.as_str())
                    .map(str::to_string);
                (key, status, Some(tree))
            }
        };
        let digest = event_digest(&route.name, &key);
        let event_id = URL_SAFE_NO_PAD.encode(digest.to_be_bytes());

        let guard = match self.cache.claim(digest, received_ms).await {
            Claim::Duplicate => {
                return Ok(Accepted {
                    event_id,
                    duplicate: true,
                })
            }
            Claim::Owner(guard) => guard,
        };
        let subscribers: Vec<_> = route
            .subscribers
            .iter()
            .filter(|s| s.filter.matches(status.as_deref(), tree.as_ref()))
            .cloned()
            .collect();
        let event = NewEvent {
            event_id: event_id.clone(),
            route: route.name.clone(),
            received_ms,
            headers: kept_headers(headers),
            body: body.clone(),
            subscribers: subscribers.iter().map(|s| s.name.clone()).collect(),
        };
        // Commit and hand over to the lanes in a task of its own: if the
        // sender hangs up while we wait, the request future is dropped, but
        // an event that commits must still reach its lanes.
        let store = self.store.clone();
        let dispatcher = self.dispatcher.clone();
        let id = event_id.clone();
        let committed = tokio::spawn(async move {
            let outcome = store.append(event).await?;
            if let AppendOutcome::Accepted { seq } = outcome {
                dispatcher
                    .enqueue_new(&id, seq, received_ms, &body, &subscribers)
                    .await;
            }
            Ok::<_, StoreError>(outcome)
        });
        let outcome = committed
            .await
            .map_err(|e| StoreError::Unavailable(format!("intake task failed: {e}")))??;
        guard.commit(received_ms);
        Ok(Accepted {
            event_id,
            duplicate: outcome == AppendOutcome::Duplicate,
        })
    }
}

/// The 128-bit digest behind an event id: the first 16 bytes of
/// SHA-256(route, key). The event id is its URL-safe base64 (22 characters,
/// no `.`), stable for a given key.
pub fn event_digest(route: &str, key: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0u8]);
    hasher.update(key.as_bytes());
    let full = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&full[..16]);
    u128::from_be_bytes(first)
}

/// The digest back from an event id, if it is one of ours.
pub fn digest_of(event_id: &str) -> Option<u128> {
    let bytes = URL_SAFE_NO_PAD.decode(event_id).ok()?;
    let array: [u8; 16] = bytes.try_into().ok()?;
    Some(u128::from_be_bytes(array))
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.chars().take(256).collect()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_url_safe_and_dotless() {
        let a = URL_SAFE_NO_PAD.encode(event_digest("muapi", "t1\ncompleted").to_be_bytes());
        let b = URL_SAFE_NO_PAD.encode(event_digest("muapi", "t1\ncompleted").to_be_bytes());
        let c = URL_SAFE_NO_PAD.encode(event_digest("muapi", "t1\nfailed").to_be_bytes());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(digest_of(&a), Some(event_digest("muapi", "t1\ncompleted")));
    }
}
