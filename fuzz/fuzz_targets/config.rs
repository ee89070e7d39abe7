//! Config loading (`Config::from_yaml`, then `Config::compile` when it
//! loads) on arbitrary text, with every `${NAME}` resolved to a value
//! holding a secret marker.
//!
//! Invariants: nothing panics, and no message (syntax error, problem,
//! compile problem) ever holds a value that came from the environment.
//!
//! The text itself may spell the marker (in a key, say, which messages do
//! name), so the check runs the load twice with two markers of the same
//! shape: text-made occurrences of marker A are the same in both runs, so
//! the first run may hold A no more often than the second.
#![no_main]

use hookrelay::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

const MARKER_A: &str = "Qx7LeakMarkerAaa1";
const MARKER_B: &str = "Qx7LeakMarkerBbb2";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Validation reads the files that `ca_file` and `server.tls` name: not
    // devices that never end or block (`/dev/zero`, `/proc/kmsg`).
    if text.contains("/dev") || text.contains("/proc") {
        return;
    }
    let with_a = messages(text, MARKER_A);
    let with_b = messages(text, MARKER_B);
    let count = |messages: &[String], marker: &str| {
        messages
            .iter()
            .map(|m| m.matches(marker).count())
            .sum::<usize>()
    };
    assert!(
        count(&with_a, MARKER_A) <= count(&with_b, MARKER_A),
        "a value from the environment reached a message: {with_a:#?}"
    );
    assert!(
        count(&with_b, MARKER_B) <= count(&with_a, MARKER_B),
        "a value from the environment reached a message: {with_b:#?}"
    );
});

/// The value of `${NAME}`: absent for names starting `UNSET`, otherwise
/// the marker inside one of a few shapes of real values (chosen by the
/// name's length) so that the key's parser gets a plausible try.
fn lookup(name: &str, marker: &str) -> Option<String> {
    if name.starts_with("UNSET") {
        return None;
    }
    Some(match name.len() % 10 {
        0 => marker.to_string(),
        1 => format!("http://user:{marker}@127.0.0.1:3000/x"),
        2 => format!("whsec_{marker}"),
        3 => format!("127.0.0.1:{marker}"),
        4 => format!("postgres://hookrelay:{marker}@127.0.0.1/db"),
        5 => format!("5s{marker}"),
        6 => format!("[{marker}, x]"),
        7 => format!("{marker}\nkey: value"),
        8 => format!("header:{marker}"),
        _ => format!("10.0.0.0/{marker}"),
    })
}

/// Every message loading (and compiling) `text` gives.
fn messages(text: &str, marker: &str) -> Vec<String> {
    match Config::from_yaml(text, &|name| lookup(name, marker)) {
        Ok(config) => match config.compile() {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        },
        Err(e @ ConfigError::Invalid(_)) => {
            let mut all = e.problems();
            all.push(e.to_string());
            all
        }
        Err(e) => vec![e.to_string()],
    }
}
