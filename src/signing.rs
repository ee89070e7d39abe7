//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, base64, sent
//! as `v1,<sig>` entries separated by spaces.
//!
//! Used both ways: the delivery client signs what it sends to subscribers,
//! and generic routes verify what senders post to us.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a signed timestamp may be from our clock.
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 300;

/// Why an inbound signature was refused. The messages name no secret.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// The timestamp is not a number.
    #[error("webhook-timestamp is not unix seconds")]
    BadTimestamp,
    /// The timestamp is outside the tolerance window (replay protection).
    #[error("webhook-timestamp is more than 5 minutes away from now")]
    Stale,
    /// No `v1` entry matched.
    #[error("no webhook-signature entry matches")]
    Mismatch,
}

/// Shortest decoded signing key accepted (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// Why a `whsec_…` secret cannot be used. The messages never quote the
/// secret: they say what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("must start with `whsec_` followed by base64")]
    MissingPrefix,
    /// The part after the prefix is not standard base64.
    #[error("the part after `whsec_` is not valid base64")]
    NotBase64,
    /// The key is shorter than [`MIN_KEY_BYTES`].
    #[error("the decoded key is shorter than 16 bytes")]
    TooShort,
}

/// Decodes a `whsec_<base64>` secret (the Standard Webhooks notation, as
/// the config writes `signing_secrets`) into its key bytes.
pub fn decode_whsec(secret: &str) -> Result<Vec<u8>, SecretError> {
    let body = secret
        .strip_prefix("whsec_")
        .ok_or(SecretError::MissingPrefix)?;
    let key = B64.decode(body).map_err(|_| SecretError::NotBase64)?;
    if key.len() < MIN_KEY_BYTES {
        return Err(SecretError::TooShort);
    }
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for `body`: one `v1,` entry per key.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mut out = String::with_capacity(keys.len() * 48);
    for key in keys {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        B64.encode_string(mac(key, id, &ts, body).finalize().into_bytes(), &mut out);
    }
    out
}

/// Verifies an inbound Standard Webhooks signature against `key`.
pub fn verify(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), VerifyError> {
    let id = id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_text = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signature = signature.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: u64 = ts_text
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if ts.abs_diff(now_secs) > TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let expected = mac(key, id, ts_text.trim(), body).finalize().into_bytes();
    let matched = signature
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| B64.decode(b64).ok())
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(expected.as_slice())));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification's test vectors.
    const SECRET: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_spec_vector() {
        let key = B64.decode(SECRET).unwrap();
        assert_eq!(sign(&[key], ID, TS, BODY), EXPECTED);
    }

    #[test]
    fn whsec_secrets_decode_or_say_why_not() {
        assert_eq!(
            decode_whsec(&format!("whsec_{SECRET}")),
            Ok(B64.decode(SECRET).unwrap())
        );
        assert_eq!(decode_whsec(SECRET), Err(SecretError::MissingPrefix));
        assert_eq!(
            decode_whsec("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        assert_eq!(decode_whsec("whsec_c2hvcnQ="), Err(SecretError::TooShort));
        // No message quotes the secret.
        for e in [
            SecretError::MissingPrefix,
            SecretError::NotBase64,
            SecretError::TooShort,
        ] {
            assert!(!e.to_string().contains(SECRET));
        }
    }

    #[test]
    fn one_entry_per_key() {
        let sig = sign(&[vec![1; 32], vec![2; 32]], ID, TS, BODY);
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|e| e.starts_with("v1,")));
    }

    #[test]
    fn verify_accepts_any_matching_entry_and_checks_time() {
        let key = B64.decode(SECRET).unwrap();
        let header = format!("v1,bm90IGl0 {EXPECTED}");
        assert_eq!(
            verify(
                &key,
                Some(ID),
                Some("1614265330"),
                Some(&header),
                BODY,
                TS + 10
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &key,
                Some(ID),
                Some("1614265330"),
                Some(&header),
                BODY,
                TS + 301
            ),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(
                &key,
                Some(ID),
                Some("1614265330"),
                Some("v1,AAAA"),
                BODY,
                TS
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&key, None, Some("1"), Some("v1,AAAA"), BODY, TS),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }
}
