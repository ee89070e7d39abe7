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

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{Route, SourceKind};
use crate::delivery::Dispatcher;
use crate::store::{AppendOutcome, EventId, NewEvent, Origin, Store, StoreError};
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
    /// Commit-and-hand-over tasks: shutdown waits for them before the lanes
    /// stop, so an event committed for a sender is always handed over.
    commits: tokio_util::task::TaskTracker,
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
            commits: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Waits for every commit in progress (shutdown, after the ingress
    /// stopped taking requests).
    pub async fn drain(&self) {
        self.commits.close();
        self.commits.wait().await;
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
        self.accept_from(route, headers, body, received_ms, Origin::Callback)
            .await
    }

    /// [`Intake::accept`] for an event of the given origin (a result the
    /// reconciler fetched goes through the same path as a callback).
    pub async fn accept_from(
        &self,
        route: &Arc<Route>,
        headers: &HeaderMap,
        body: Bytes,
        received_ms: u64,
        origin: Origin,
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
        let (key, status, source_id, tree) = match route.source {
            SourceKind::Muapi => {
                let head = muapi::parse(&body)?;
                let tree = if route.needs_json {
                    Some(parse_tree()?)
                } else {
                    None
                };
                let key = head.key();
                (
                    key,
                    Some(head.status.into_owned()),
                    Some(head.id.into_owned()),
                    tree,
                )
            }
            SourceKind::Generic => {
                json::check(&body)?;
                let tree = parse_tree()?;
                let key = generic::key(&tree, &body, headers, route.key_spec.as_ref())?;
                // A provider's `status` is kept (for filters and operators)
                // when it is a short text without control characters, as
                // every store can keep it; any other is no status.
                let status = tree
                    .get("status")
                    .and_then(|s| s.as_str())
                    .filter(|s| {
                        s.len() <= muapi::MAX_STATUS_BYTES && !s.chars().any(char::is_control)
                    })
                    .map(str::to_string);
                let source_id = ["webhook-id", "idempotency-key"].iter().find_map(|name| {
                    let value = headers.get(*name)?.to_str().ok()?.trim();
                    (!value.is_empty()).then(|| value.chars().take(256).collect())
                });
                (key, status, source_id, Some(tree))
            }
        };
        let digest = event_digest(&route.name, &key);
        let id = EventId(digest);
        let event_id = id.to_string();

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
        // A final result on a route that reconciles settles its expected task.
        let settles = route.muapi.is_some()
            && status
                .as_deref()
                .is_some_and(|s| crate::store::FINAL_STATUSES.contains(&s));
        let event = NewEvent {
            id,
            route: route.name.clone(),
            received_ms,
            source_id,
            status,
            origin,
            headers: kept_headers(headers),
            body: body.clone(),
            subscribers: subscribers.iter().map(|s| s.name.clone()).collect(),
            ttl_ms: self.cache.ttl_ms(),
            settles,
        };
        // Commit and hand over to the lanes in a task of its own: if the
        // sender hangs up while we wait, the request future is dropped, but
        // an event that commits must still reach its lanes.
        if !self.store.available() {
            // The database is known to be unreachable: answer 503 at once
            // instead of waiting for a connection to time out.
            return Err(StoreError::Unavailable("the store is unreachable".into()).into());
        }
        let store = self.store.clone();
        let dispatcher = self.dispatcher.clone();
        let committed = self.commits.spawn(async move {
            let outcome = store.append(event).await?;
            if outcome == AppendOutcome::Accepted {
                dispatcher
                    .hand_over(id, received_ms, origin, &body, &subscribers)
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
        let a = EventId(event_digest("muapi", "t1\ncompleted")).to_string();
        let b = EventId(event_digest("muapi", "t1\ncompleted")).to_string();
        let c = EventId(event_digest("muapi", "t1\nfailed")).to_string();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
