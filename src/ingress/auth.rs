//! Sender tokens: how a presented token is found in a request and compared
//! with the configured ones.
//!
//! Tokens are compared as SHA-256 digests, in constant time, against every
//! configured token (rotation): comparing the tokens themselves would end
//! early on a length mismatch and so tell a prober the token's length.
//!
//! `?token=` is taken as the sender wrote it: muapi calls the configured
//! URL verbatim, so a `+` is a plus sign (RFC 3986), never a space as in
//! HTML form encoding. A value that a client percent-encoded (`%2B`) also
//! matches once decoded (by the `percent-encoding` crate).

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a token. Configured tokens are kept only in this
/// form once compiled, so the hot path compares 32 bytes whatever the
/// tokens' lengths, and a debug print of a route shows no token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a digest lets a short token be guessed offline: print nothing.
        f.write_str("TokenDigest(..)")
    }
}

/// Something [`token_matches`] can compare a presented token with: a
/// precomputed [`TokenDigest`], or a token in the clear (hashed per call).
pub trait AcceptedToken {
    /// The token's digest.
    fn digest(&self) -> TokenDigest;
}

impl AcceptedToken for TokenDigest {
    fn digest(&self) -> TokenDigest {
        *self
    }
}

impl AcceptedToken for Vec<u8> {
    fn digest(&self) -> TokenDigest {
        TokenDigest::of(self)
    }
}

impl AcceptedToken for &[u8] {
    fn digest(&self) -> TokenDigest {
        TokenDigest::of(self)
    }
}

impl AcceptedToken for String {
    fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.as_bytes())
    }
}

impl AcceptedToken for &str {
    fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.as_bytes())
    }
}

/// Whether `presented` is one of `tokens`. The digests of all of them are
/// compared in constant time, so neither which token matched nor any
/// token's length shows in the timing.
pub fn token_matches<T: AcceptedToken>(tokens: &[T], presented: &[u8]) -> bool {
    let presented = TokenDigest::of(presented);
    let mut any = subtle::Choice::from(0u8);
    for token in tokens {
        any |= token.digest().0.ct_eq(&presented.0);
    }
    any.into()
}

/// The value of the first `token=` parameter of a query, as written.
pub fn raw_query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// The candidates a `?token=` value stands for: the value as written and,
/// when it differs, its percent-decoding (a `+` stays a `+` in both).
pub fn query_token_candidates(raw: &str) -> [Cow<'_, [u8]>; 2] {
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode_str(raw).into();
    [Cow::Borrowed(raw.as_bytes()), decoded]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_every_token_whatever_its_length() {
        let tokens = [TokenDigest::of(b"old-token"), TokenDigest::of(b"new")];
        assert!(token_matches(&tokens, b"old-token"));
        assert!(token_matches(&tokens, b"new"));
        assert!(!token_matches(&tokens, b"old-toke"));
        assert!(!token_matches(&tokens, b"new-token-longer"));
        assert!(!token_matches(&tokens, b""));
        assert!(!token_matches::<TokenDigest>(&[], b""));
        // Tokens in the clear (the admin API's) compare the same way.
        assert!(token_matches(&[b"admin".to_vec()], b"admin"));
        assert!(!token_matches(&[b"admin".to_vec()], b"admin "));
        assert_eq!(format!("{:?}", tokens[0]), "TokenDigest(..)");
    }

    #[test]
    fn query_token_is_taken_as_written_or_percent_decoded() {
        let found = |q: &str| {
            let raw = raw_query_token(q)?;
            Some(query_token_candidates(raw).map(|c| c.into_owned()))
        };
        assert_eq!(found("a=1&token=ab%2Fc").unwrap()[1], b"ab/c");
        assert_eq!(found("a=1&token=ab%2Fc").unwrap()[0], b"ab%2Fc");
        assert_eq!(found("tokens=x"), None);
        assert_eq!(
            found("token=a+b").unwrap(),
            [b"a+b".to_vec(), b"a+b".to_vec()]
        );
        assert_eq!(found("token=a%2Bb").unwrap()[1], b"a+b");
        // A sign is not a hex digit: `%+4` stays as it is.
        assert_eq!(found("token=%+4").unwrap()[1], b"%+4");
        assert_eq!(found("token=100%").unwrap()[1], b"100%");
    }
}
