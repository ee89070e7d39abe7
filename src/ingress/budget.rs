//! Bounds on the request bodies held before their senders are
//! authenticated.
//!
//! A route known only by its Standard Webhooks signature must read a body
//! before it can tell who sent it. Without a bound, any client could make
//! the gateway buffer `max_body_bytes` per stream, on every stream of every
//! connection. Each such body therefore holds a [`Reservation`] against two
//! [`Pool`]s: one per connection and one per listener. A body that does not
//! fit is refused (503 with `Retry-After`) instead of read; what a request
//! held is given back when it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes held at once against one bound.
#[derive(Debug, Default)]
pub struct Pool {
    held: AtomicU64,
}

impl Pool {
    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: u64, limit: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The pools a request draws on: its connection's and its listener's. The
/// listener puts one in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct BodyPools {
    /// Shared by the requests of one connection.
    pub connection: Arc<Pool>,
    /// Shared by every connection of the listener.
    pub total: Arc<Pool>,
}

/// The two bounds, in bytes (read from the config for each request, so a
/// reload applies to the next request).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Per connection.
    pub connection: u64,
    /// For the whole listener.
    pub total: u64,
}

/// Bytes one request holds in both pools; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    pools: BodyPools,
    limits: Limits,
    held: u64,
}

impl Reservation {
    /// An empty reservation against `pools`.
    pub fn new(pools: BodyPools, limits: Limits) -> Self {
        Self {
            pools,
            limits,
            held: 0,
        }
    }

    /// Takes `bytes` more from both pools, or nothing if either bound
    /// would be passed.
    pub fn grow(&mut self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        if !self
            .pools
            .connection
            .try_take(bytes, self.limits.connection)
        {
            return false;
        }
        if !self.pools.total.try_take(bytes, self.limits.total) {
            self.pools.connection.give(bytes);
            return false;
        }
        self.held += bytes;
        true
    }

    /// Bytes held by this reservation.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held > 0 {
            self.pools.connection.give(self.held);
            self.pools.total.give(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_per_connection_and_in_total_and_are_given_back() {
        let limits = Limits {
            connection: 100,
            total: 150,
        };
        let total = Arc::new(Pool::default());
        let a = BodyPools {
            connection: Arc::default(),
            total: total.clone(),
        };
        let b = BodyPools {
            connection: Arc::default(),
            total: total.clone(),
        };
        let mut a1 = Reservation::new(a.clone(), limits);
        assert!(a1.grow(60));
        let mut a2 = Reservation::new(a.clone(), limits);
        // 60 + 50 passes the connection's 100.
        assert!(!a2.grow(50));
        assert!(a2.grow(40));
        let mut b1 = Reservation::new(b.clone(), limits);
        // 100 held in all: 60 more would pass the total 150.
        assert!(!b1.grow(60));
        assert_eq!(b.connection.held(), 0, "a refused take leaves nothing");
        assert!(b1.grow(50));
        assert_eq!(total.held(), 150);
        drop(a1);
        assert_eq!((a.connection.held(), total.held()), (40, 90));
        drop(a2);
        drop(b1);
        assert_eq!(total.held(), 0);
        assert!(Reservation::new(b, limits).grow(0));
    }
}
