//! Standard Webhooks signatures (`signing::{sign, verify, decode_whsec}`).
//!
//! Input, one field per line, as a sender's request would carry them: the
//! secret (`whsec_<base64>`; any other text is used as raw key bytes), the
//! `webhook-id`, the `webhook-timestamp`, the `webhook-signature`, then the
//! body. The seed corpus holds the specification's test vector.
//!
//! Invariants:
//! - `decode_whsec` never panics, never returns a key shorter than 16
//!   bytes, and reads back any key of 16 bytes or more written as
//!   `whsec_<base64>`;
//! - `verify` never panics on any headers;
//! - `verify` accepts what `sign` produces (with the key among others,
//!   anywhere within the timestamp tolerance) and refuses it once any one
//!   byte of the body, the `webhook-id`, the `webhook-timestamp` or the
//!   signature is changed.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hookrelay::signing::{
    decode_whsec, sign, verify, VerifyError, MIN_KEY_BYTES, TIMESTAMP_TOLERANCE_SECS,
};
use libfuzzer_sys::fuzz_target;

/// About this many positions of each part are changed per input (each
/// change costs an HMAC over the whole body); a signature has 47 bytes, so
/// every one of them is.
const CHANGES: usize = 48;

/// A header's value as intake reads it (`to_str`): text, or absent.
fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(5, |b| *b == b'\n');
    let mut field = || lines.next().unwrap_or_default();
    let (secret, id, timestamp, signature, body) = (field(), field(), field(), field(), field());

    // Secrets.
    let decoded = text(secret).map(decode_whsec);
    if let Some(Ok(key)) = &decoded {
        assert!(key.len() >= MIN_KEY_BYTES, "a key of {} bytes", key.len());
    }
    let key = match decoded {
        Some(Ok(key)) => key,
        _ => secret.to_vec(),
    };
    if key.len() >= MIN_KEY_BYTES {
        let written = format!("whsec_{}", B64.encode(&key));
        assert_eq!(decode_whsec(&written).as_ref(), Ok(&key));
    }

    // The sender's headers as they are, at their own time and at others.
    let ts: u64 = text(timestamp)
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1_614_265_330);
    for now in [
        ts,
        0,
        u64::MAX,
        ts.wrapping_add(TIMESTAMP_TOLERANCE_SECS + 1),
    ] {
        let _ = verify(&key, text(id), text(timestamp), text(signature), body, now);
    }

    // What we sign verifies, with the key among others, at any clock
    // within the tolerance.
    let id = String::from_utf8_lossy(id).into_owned();
    let ts_text = ts.to_string();
    let others = [b"another key, 32 bytes long......".to_vec(), key.clone()];
    for keys in [&others[1..], &others[..]] {
        let signed = sign(keys, &id, ts, body);
        for now in [
            ts,
            ts.saturating_sub(TIMESTAMP_TOLERANCE_SECS),
            ts.saturating_add(TIMESTAMP_TOLERANCE_SECS),
        ] {
            assert_eq!(
                verify(&key, Some(&id), Some(&ts_text), Some(&signed), body, now),
                Ok(()),
                "a signature from {} key(s) did not verify",
                keys.len()
            );
        }
    }

    // Any one byte changed is refused (one key, so no other entry can
    // match). A header that is no longer UTF-8 is not read at all (intake
    // reads headers with `to_str`): refused as missing.
    let signed = sign(&[key.clone()], &id, ts, body);
    let parts: [&[u8]; 4] = [body, id.as_bytes(), ts_text.as_bytes(), signed.as_bytes()];
    for (which, part) in parts.iter().enumerate() {
        let step = (part.len() / CHANGES).max(1);
        for at in (0..part.len()).step_by(step) {
            for flip in [0x01, 0x20, 0x80] {
                let mut changed = part.to_vec();
                changed[at] ^= flip;
                let mut all = parts.map(<[u8]>::to_vec);
                all[which] = changed;
                let [body, id, ts_text, signed] = &all;
                let verdict = verify(&key, text(id), text(ts_text), text(signed), body, ts);
                assert!(
                    matches!(
                        verdict,
                        Err(VerifyError::Mismatch
                            | VerifyError::Stale
                            | VerifyError::BadTimestamp
                            | VerifyError::MissingHeader(_))
                    ),
                    "a change of byte {at} of part {which} (body, id, timestamp, signature) \
                     was accepted"
                );
            }
        }
    }
});
