//! The in-memory idempotency cache: which event ids were accepted recently,
//! and which are being committed right now.
//!
//! Keys are the 128-bit digests behind event ids (16 bytes instead of a
//! string), so a million keys fit in well under 256 MiB. The store remains
//! the authority: a key evicted here is still answered `duplicate` by the
//! store's own check while it holds the event.
//!
//! Two identical callbacks at the same instant: the first claims the key and
//! commits; the second waits on the claim and then sees `Committed`
//! (duplicate) or, if the first failed or was dropped, claims it itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

enum Slot {
    /// Durable since this unix-ms time.
    Committed(u64),
    /// Being committed; the receiver wakes when the claim ends either way.
    Pending(watch::Receiver<()>),
}

/// Recently accepted event keys with a TTL and a size bound.
pub struct IdempotencyCache {
    map: DashMap<u128, Slot>,
    /// Committed keys in commit order: the eviction and expiry queue.
    order: Mutex<VecDeque<(u128, u64)>>,
    /// `idempotency.ttl`; a reload may change it.
    ttl_ms: AtomicU64,
    /// `idempotency.max_keys`; a reload may change it.
    max_keys: AtomicUsize,
}

/// The result of [`IdempotencyCache::claim`].
pub enum Claim<'a> {
    /// Accepted before, within the TTL.
    Duplicate,
    /// The caller owns the key until it commits or drops the guard.
    Owner(ClaimGuard<'a>),
}

/// Held while the owner commits; dropping it without [`ClaimGuard::commit`]
/// releases the key to the next waiter.
pub struct ClaimGuard<'a> {
    cache: &'a IdempotencyCache,
    key: u128,
    // Dropping the sender wakes every waiter.
    _wake: watch::Sender<()>,
    committed: bool,
}

impl IdempotencyCache {
    /// An empty cache.
    pub fn new(ttl_ms: u64, max_keys: usize) -> Self {
        Self {
            map: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            ttl_ms: AtomicU64::new(ttl_ms),
            max_keys: AtomicUsize::new(max_keys.max(1)),
        }
    }

    /// The idempotency window, in ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    /// Applies new limits (a reload): a shorter TTL or a lower bound takes
    /// effect at the next expiry or insert.
    pub fn set_limits(&self, ttl_ms: u64, max_keys: usize) {
        self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
        self.max_keys.store(max_keys.max(1), Ordering::Relaxed);
        let mut order = self.order.lock().expect("idempotency order lock");
        self.evict(&mut order);
    }

    /// Keys held (committed or pending).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Claims `key`, waiting while another request is committing it.
    pub async fn claim(&self, key: u128, now_ms: u64) -> Claim<'_> {
        loop {
            let mut waiter = match self.map.entry(key) {
                Entry::Occupied(mut slot) => match slot.get() {
                    Slot::Committed(at) if now_ms.saturating_sub(*at) <= self.ttl_ms() => {
                        return Claim::Duplicate
                    }
                    Slot::Committed(_) => {
                        let (tx, rx) = watch::channel(());
                        slot.insert(Slot::Pending(rx));
                        return Claim::Owner(self.guard(key, tx));
                    }
                    Slot::Pending(rx) => rx.clone(),
                },
                Entry::Vacant(slot) => {
                    let (tx, rx) = watch::channel(());
                    slot.insert(Slot::Pending(rx));
                    return Claim::Owner(self.guard(key, tx));
                }
            };
            // The shard lock is released here; wait for the owner to finish.
            let _ = waiter.changed().await;
        }
    }

    fn guard(&self, key: u128, tx: watch::Sender<()>) -> ClaimGuard<'_> {
        ClaimGuard {
            cache: self,
            key,
            _wake: tx,
            committed: false,
        }
    }

    /// Records a key known to be durable (warming the cache from the store).
    pub fn insert_committed(&self, key: u128, at_ms: u64) {
        self.map.insert(key, Slot::Committed(at_ms));
        let mut order = self.order.lock().expect("idempotency order lock");
        order.push_back((key, at_ms));
        self.evict(&mut order);
    }

    fn evict(&self, order: &mut VecDeque<(u128, u64)>) {
        while order.len() > self.max_keys.load(Ordering::Relaxed) {
            if let Some((key, at)) = order.pop_front() {
                self.map.remove_if(
                    &key,
                    |_, slot| matches!(slot, Slot::Committed(a) if *a == at),
                );
            }
        }
    }

    /// Drops keys older than the TTL; returns how many.
    pub fn expire(&self, now_ms: u64) -> usize {
        let mut order = self.order.lock().expect("idempotency order lock");
        let mut removed = 0;
        while let Some(&(key, at)) = order.front() {
            if now_ms.saturating_sub(at) <= self.ttl_ms() {
                break;
            }
            order.pop_front();
            if self
                .map
                .remove_if(
                    &key,
                    |_, slot| matches!(slot, Slot::Committed(a) if *a == at),
                )
                .is_some()
            {
                removed += 1;
            }
        }
        removed
    }
}

impl ClaimGuard<'_> {
    /// The key is durable: later claims within the TTL are duplicates.
    pub fn commit(mut self, at_ms: u64) {
        self.committed = true;
        self.cache.insert_committed(self.key, at_ms);
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.cache
                .map
                .remove_if(&self.key, |_, slot| matches!(slot, Slot::Pending(_)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn committed_keys_are_duplicates_until_ttl() {
        let cache = IdempotencyCache::new(1000, 10);
        match cache.claim(1, 0).await {
            Claim::Owner(g) => g.commit(0),
            Claim::Duplicate => panic!("fresh key"),
        }
        assert!(matches!(cache.claim(1, 500).await, Claim::Duplicate));
        assert!(matches!(cache.claim(1, 2000).await, Claim::Owner(_)));
    }

    #[tokio::test]
    async fn concurrent_claim_waits_for_owner() {
        let cache = Arc::new(IdempotencyCache::new(1000, 10));
        let Claim::Owner(guard) = cache.claim(7, 0).await else {
            panic!("fresh key")
        };
        let c2 = cache.clone();
        let second = tokio::spawn(async move { matches!(c2.claim(7, 0).await, Claim::Duplicate) });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        guard.commit(0);
        assert!(second.await.unwrap());
    }

    #[tokio::test]
    async fn failed_owner_releases_key_to_waiter() {
        let cache = Arc::new(IdempotencyCache::new(1000, 10));
        let Claim::Owner(guard) = cache.claim(7, 0).await else {
            panic!("fresh key")
        };
        let c2 = cache.clone();
        let second = tokio::spawn(async move { matches!(c2.claim(7, 0).await, Claim::Owner(_)) });
        tokio::task::yield_now().await;
        drop(guard);
        assert!(second.await.unwrap());
    }

    #[tokio::test]
    async fn bound_evicts_oldest_and_expire_drops_old() {
        let cache = IdempotencyCache::new(1000, 2);
        for k in 0..3u128 {
            cache.insert_committed(k, k as u64);
        }
        assert_eq!(cache.len(), 2);
        assert!(matches!(cache.claim(0, 3).await, Claim::Owner(_)));
        assert_eq!(cache.expire(1002), 1);
        assert_eq!(cache.len(), 1);
    }
}
