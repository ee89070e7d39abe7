//! The embedded store's record format (`store::codec`): a stored record is
//! input too, after a crash, a disk fault or a hand-edited file.
//!
//! Invariants:
//! - `decode_event`, `decode_key` and `decode_expected` never panic on any
//!   bytes, and decoding without the body agrees with decoding with it;
//! - what decodes, re-encoded, decodes to the same record;
//! - any record (built from the same input) round-trips: encode → decode
//!   gives it back. Times before the event's receipt are outside the
//!   format (they are stored as deltas from it), as is an attempt status 0
//!   (stored as "no status"), so the built records keep to that.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;
use hookrelay::store::codec::{
    decode_event, decode_expected, decode_key, encode_event, encode_expected, encode_key,
    DeliveryRecord, EventRecord, ExpectedRecord, KeyRecord, StoredBody,
};
use hookrelay::store::{AttemptRecord, DeliveryState, EventId, ExpectedState, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Any bytes as each kind of record.
    let full = decode_event(data, true);
    let light = decode_event(data, false);
    match (&full, &light) {
        (Ok(full), Ok(light)) => {
            // The light read keeps the body's length, not its bytes.
            assert_eq!(light.body.stored_len(), 0);
            assert_eq!(light.body.len(), full.body.len());
            assert_eq!(
                EventRecord {
                    body: full.body.clone(),
                    ..light.clone()
                },
                *full
            );
            // Unpacking a damaged body is an error, never a panic.
            let _ = full.body.unpack();
            let again = decode_event(&encode_event(full), true).expect("re-encoded");
            assert_eq!(&again, full);
        }
        (Err(_), Err(_)) => {}
        (full, light) => panic!("with body: {full:?}; without: {light:?}"),
    }
    if let Ok(key) = decode_key(data) {
        assert_eq!(decode_key(&encode_key(&key)).expect("re-encoded"), key);
    }
    if let Ok(expected) = decode_expected(data) {
        let again = decode_expected(&encode_expected(&expected)).expect("re-encoded");
        assert_eq!(again, expected);
    }

    // The same bytes as the choices that build records.
    let mut u = Unstructured::new(data);
    if let Ok(event) = event(&mut u) {
        let bytes = encode_event(&event);
        assert_eq!(decode_event(&bytes, true).expect("encoded"), event);
    }
    if let Ok(key) = key(&mut u) {
        assert_eq!(decode_key(&encode_key(&key)).expect("encoded"), key);
    }
    if let Ok(expected) = expected(&mut u) {
        let bytes = encode_expected(&expected);
        assert_eq!(decode_expected(&bytes).expect("encoded"), expected);
    }
});

fn origin(u: &mut Unstructured<'_>) -> Result<Origin> {
    Ok(if bool::arbitrary(u)? {
        Origin::Callback
    } else {
        Origin::Reconciled
    })
}

fn event(u: &mut Unstructured<'_>) -> Result<EventRecord> {
    let received_ms = u64::arbitrary(u)?;
    // A time at or after the receipt.
    let after = |u: &mut Unstructured<'_>| -> Result<u64> {
        Ok(received_ms.saturating_add(u64::arbitrary(u)?))
    };
    let mut deliveries = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let mut history = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            history.push(AttemptRecord {
                attempt: u32::arbitrary(u)?,
                at_ms: after(u)?,
                status: Option::<u16>::arbitrary(u)?.filter(|s| *s != 0),
                error: Option::<String>::arbitrary(u)?,
                duration_ms: u64::arbitrary(u)?,
            });
        }
        deliveries.push(DeliveryRecord {
            lane: u32::arbitrary(u)?,
            state: *u.choose(&[
                DeliveryState::Pending,
                DeliveryState::Delivered,
                DeliveryState::Dead,
                DeliveryState::Deleted,
            ])?,
            attempts: u32::arbitrary(u)?,
            due_ms: after(u)?,
            schedule_start_ms: after(u)?,
            updated_ms: after(u)?,
            dead_reason: Option::<String>::arbitrary(u)?,
            history,
        });
    }
    Ok(EventRecord {
        id: EventId(u128::arbitrary(u)?),
        received_ms,
        route: u32::arbitrary(u)?,
        origin: origin(u)?,
        status: Option::<String>::arbitrary(u)?,
        source_id: Option::<String>::arbitrary(u)?,
        headers: Vec::<(String, String)>::arbitrary(u)?,
        deliveries,
        body: StoredBody::pack(&Bytes::from(Vec::<u8>::arbitrary(u)?)),
    })
}

fn key(u: &mut Unstructured<'_>) -> Result<KeyRecord> {
    Ok(KeyRecord {
        received_ms: u64::arbitrary(u)?,
        seq: u64::arbitrary(u)?,
        route: u32::arbitrary(u)?,
    })
}

fn expected(u: &mut Unstructured<'_>) -> Result<ExpectedRecord> {
    Ok(ExpectedRecord {
        endpoint: String::arbitrary(u)?,
        submitted_ms: u64::arbitrary(u)?,
        state: *u.choose(&[
            ExpectedState::Waiting,
            ExpectedState::Polling,
            ExpectedState::Done,
            ExpectedState::Expired,
        ])?,
        settled_by: if bool::arbitrary(u)? {
            Some(origin(u)?)
        } else {
            None
        },
        status: Option::<String>::arbitrary(u)?,
        polls: u32::arbitrary(u)?,
        next_poll_ms: u64::arbitrary(u)?,
        updated_ms: u64::arbitrary(u)?,
        last_result: Option::<String>::arbitrary(u)?,
    })
}
