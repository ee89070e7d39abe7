//! `?token=` handling (`ingress::auth::{raw_query_token,
//! query_token_candidates, token_matches}`) on arbitrary query strings.
//!
//! Input, one field per line: a query string as a sender wrote it, a
//! configured token, another token.
//!
//! Invariants:
//! - nothing panics;
//! - the raw value is the first `token=` parameter, as written (up to the
//!   next `&`);
//! - the candidates are the value as written and its percent-decoding,
//!   exactly what the `percent-encoding` crate and a plain RFC 3986
//!   reference decoder (below) give: `+` stays `+`, `%2B` becomes `+`, a
//!   `%` not followed by two hex digits stays as written;
//! - a configured token sent percent-encoded, or verbatim when it holds no
//!   `&`, matches; a different token does not.
#![no_main]

use hookrelay::ingress::auth::{query_token_candidates, raw_query_token, token_matches};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let mut field = || lines.next().unwrap_or_default();
    let (query, token, other) = (field(), field(), field());

    // Whatever a sender puts in the query.
    if let Some(raw) = raw_query_token(query) {
        assert!(!raw.contains('&'));
        let first = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="));
        assert_eq!(Some(raw), first);
        let [as_written, decoded] = query_token_candidates(raw);
        assert_eq!(&*as_written, raw.as_bytes());
        let crate_decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        assert_eq!(&*decoded, &crate_decoded[..]);
        assert_eq!(&*decoded, &reference_decode(raw.as_bytes())[..]);
    }

    // A configured token, sent either way, matches; another does not.
    let tokens = [token.as_bytes().to_vec()];
    let sends = |query: &str| {
        let raw = raw_query_token(query).expect("a token parameter");
        let [as_written, decoded] = query_token_candidates(raw);
        token_matches(&tokens, &as_written) | token_matches(&tokens, &decoded)
    };
    let encoded = utf8_percent_encode(token, NON_ALPHANUMERIC).to_string();
    assert!(sends(&format!("a=1&token={encoded}&b=2")));
    if !token.contains('&') {
        assert!(sends(&format!("token={token}")));
    }
    let other_sent = utf8_percent_encode(other, NON_ALPHANUMERIC).to_string();
    // (The encoded form of another token is itself a token that matches
    // as written.)
    if other != token && other_sent != token {
        assert!(!sends(&format!("token={other_sent}")));
    }
});

/// RFC 3986 percent-decoding, written out: `%` and two hex digits is that
/// byte; everything else (`+` included) is itself.
fn reference_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}
