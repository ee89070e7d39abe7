//! A per-subscriber circuit breaker.
//!
//! `failure_threshold` consecutive failures open it; while open, deliveries
//! wait (they are not failed and their schedule is not consumed). After
//! `cooldown`, one probe attempt runs (half-open): success closes the
//! circuit, failure opens it for another cooldown.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Breaker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Breaker state of one lane (owned by the lane task, so no locking).
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: Breaker,
    failures: u32,
    state: State,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: Breaker) -> Self {
        Self {
            settings,
            failures: 0,
            state: State::Closed,
        }
    }

    /// Whether an attempt may start now; moves Open → HalfOpen after the cooldown.
    pub fn allows(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: false };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probing } => !probing,
        }
    }

    /// An attempt is starting (a half-open breaker lets only this one through).
    pub fn on_start(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen { probing: true };
        }
    }

    /// An attempt ended without making a request (its body could not be
    /// read): a probe slot it held is free again, so the next delivery can
    /// probe instead of the breaker waiting forever for this one.
    pub fn abandon(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// Records an attempt's outcome: `healthy` is false for transport
    /// errors, timeouts, 5xx and 429.
    pub fn record(&mut self, healthy: bool, now: Instant) {
        if healthy {
            self.failures = 0;
            self.state = State::Closed;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::HalfOpen { .. } => self.open(now),
            State::Closed if self.failures >= self.settings.failure_threshold => self.open(now),
            _ => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.settings.cooldown,
        };
    }

    /// When an open breaker will allow a probe.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// True while open or half-open (for the `circuit_open` gauge and admin).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    /// A name for the admin API.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }

    /// The configured cooldown.
    pub fn cooldown(&self) -> Duration {
        self.settings.cooldown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(Breaker {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..2 {
            b.record(false, t0);
        }
        assert!(b.allows(t0));
        b.record(false, t0);
        assert!(!b.allows(t0));
        assert!(!b.allows(t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(10);
        assert!(b.allows(later));
        b.on_start();
        assert!(!b.allows(later), "only one probe while half-open");
        b.record(false, later);
        assert!(!b.allows(later + Duration::from_secs(1)));
        let again = later + Duration::from_secs(10);
        assert!(b.allows(again));
        b.on_start();
        b.record(true, again);
        assert!(b.allows(again));
        assert!(!b.is_open());
    }

    #[test]
    fn an_abandoned_probe_frees_the_half_open_slot() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert!(b.allows(later));
        b.on_start();
        assert!(!b.allows(later), "the probe is out");
        // The probe could not make its request (no result to record).
        b.abandon();
        assert!(b.allows(later), "another probe may run");
        // Abandoning outside a probe changes nothing.
        let mut closed = breaker();
        closed.abandon();
        assert!(closed.allows(t0));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record(false, t0);
        b.record(false, t0);
        b.record(true, t0);
        b.record(false, t0);
        b.record(false, t0);
        assert!(b.allows(t0));
    }
}
