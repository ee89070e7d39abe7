//! Config durations (`config::duration::parse`) on arbitrary text.
//!
//! Invariants: nothing panics; a parsed duration is at most the documented
//! maximum (365 days); an accepted sum splits into parts that parse and
//! add up to it (so `1h30m` means 1h + 30m).
#![no_main]

use hookrelay::config::duration::{parse, MAX};
use hookrelay::config::MAX_DURATION;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(MAX, MAX_DURATION);
    let Ok(whole) = parse(text) else {
        return;
    };
    assert!(whole <= MAX, "parsed beyond the maximum: {whole:?}");

    // Split an accepted text between two of its parts (each a number and
    // its unit): each side parses, and the two add up to the whole.
    let text = text.trim();
    for (at, _) in text.match_indices(|c: char| c.is_ascii_digit()) {
        let (head, tail) = text.split_at(at);
        if head.is_empty() || head.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
            continue;
        }
        let (Ok(a), Ok(b)) = (parse(head), parse(tail)) else {
            panic!("a part of an accepted duration does not parse");
        };
        assert_eq!(a + b, whole, "the parts do not add up");
    }
});
