//! `Retry-After` from a subscriber (`delivery::client::parse_retry_after`)
//! on arbitrary header bytes, and the wait it leads to
//! (`RetryPolicy::delay`).
//!
//! Invariants: nothing panics; delay-seconds parse to exactly that many
//! seconds; an HTTP date gives at most the time until that date; the wait
//! before the next attempt never exceeds the policy's `max_interval`
//! (itself capped at the longest duration a config may hold), whatever
//! the subscriber asked for, and is never shorter than what it asked for
//! within that cap.
#![no_main]

use std::time::{Duration, SystemTime};

use hookrelay::config::{RetryConfig, RetryPolicy};
use hookrelay::delivery::client::parse_retry_after;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let before = SystemTime::now();
    let Some(wait) = parse_retry_after(&value) else {
        return;
    };
    let text = value.to_str().expect("what parses is text").trim();
    if let Ok(seconds) = text.parse::<u64>() {
        assert_eq!(wait, Duration::from_secs(seconds));
    } else {
        let when = httpdate::parse_http_date(text).expect("a date, then");
        let most = when.duration_since(before).unwrap_or(Duration::ZERO);
        assert!(wait <= most, "{wait:?} is beyond the date");
    }

    for max_interval in [Duration::ZERO, Duration::from_secs(3600), Duration::MAX] {
        let policy = RetryPolicy {
            config: RetryConfig {
                max_interval,
                ..RetryConfig::default()
            },
        };
        for attempts_done in [1, 7, u32::MAX] {
            for unit in [0.0, 0.5, 0.999] {
                let cap = max_interval.min(hookrelay::config::MAX_DURATION);
                let delay = policy.delay(attempts_done, Some(wait), unit);
                assert!(delay <= cap, "{delay:?}");
                assert!(delay >= wait.min(cap), "{delay:?}");
            }
        }
    }
});
