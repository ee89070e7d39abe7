//! The embedded store's record format: compact, versioned binary.
//!
//! Every record starts with a version byte, so a later hookrelay can still
//! read what an earlier one wrote (a reader keeps a decoder for every
//! version it has ever written; [`VERSION`] is the one written now).
//! Integers are LEB128 varints, times are stored as deltas from the event's
//! receipt, and route and subscriber names are small numbers from the
//! store's name table, so a delivered callback costs a few dozen bytes
//! besides its body.
//!
//! An event record holds the event and its deliveries together (a delivery
//! belongs to exactly one event, and a commit that changes a delivery
//! rewrites the page of its event anyway), with the body last so a reader
//! that only needs the deliveries stops before it.
//!
//! Versions: 1 kept the body as received; 2 (this build) keeps it as a
//! [`StoredBody`]: its length as received, then raw or deflated with a
//! dictionary of muapi's field names, whichever is smaller. Keys and
//! expected tasks are laid out alike in both versions.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{
    AttemptRecord, DeliveryState, EventId, ExpectedState, Origin, StoreError, ATTEMPT_HISTORY,
};

/// The record version this build writes.
pub const VERSION: u8 = 2;

/// An event with its deliveries, as the embedded store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The event's id.
    pub id: EventId,
    /// Receipt time, unix ms; other times are stored relative to it.
    pub received_ms: u64,
    /// The route's number in the name table.
    pub route: u32,
    /// Callback or reconciled.
    pub origin: Origin,
    /// The callback's status, when it has one.
    pub status: Option<String>,
    /// The sender's own id (muapi task id), when known.
    pub source_id: Option<String>,
    /// Kept request headers.
    pub headers: Vec<(String, String)>,
    /// One per subscriber that matched.
    pub deliveries: Vec<DeliveryRecord>,
    /// The body as kept (see [`StoredBody::unpack`] for the bytes received).
    pub body: StoredBody,
}

/// One (event, subscriber) delivery inside its [`EventRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The (route, subscriber) pair's number in the name table.
    pub lane: u32,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts in this schedule.
    pub attempts: u32,
    /// Next due time (pending), unix ms.
    pub due_ms: u64,
    /// Start of the schedule, unix ms.
    pub schedule_start_ms: u64,
    /// Last change, unix ms.
    pub updated_ms: u64,
    /// Why it is (or was) dead.
    pub dead_reason: Option<String>,
    /// The newest attempts, oldest first (at most [`ATTEMPT_HISTORY`]).
    pub history: Vec<AttemptRecord>,
}

impl EventRecord {
    /// Deliveries still holding the event open (pending or dead).
    pub fn open(&self) -> u32 {
        self.deliveries.iter().filter(|d| d.state.is_open()).count() as u32
    }

    /// The delivery of a lane.
    pub fn delivery_mut(&mut self, lane: u32) -> Option<&mut DeliveryRecord> {
        self.deliveries.iter_mut().find(|d| d.lane == lane)
    }

    /// Appends an attempt to a delivery's history, keeping the newest.
    pub fn push_attempt(delivery: &mut DeliveryRecord, attempt: AttemptRecord) {
        delivery.history.push(attempt);
        if delivery.history.len() > ATTEMPT_HISTORY {
            let excess = delivery.history.len() - ATTEMPT_HISTORY;
            delivery.history.drain(..excess);
        }
    }
}

/// The `keys` table's value: when the key was first accepted, which event
/// record holds its details (they may be pruned since), and its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord {
    /// Receipt time, unix ms (the idempotency window counts from here).
    pub received_ms: u64,
    /// The event record's sequence number.
    pub seq: u64,
    /// The route's number in the name table.
    pub route: u32,
}

/// How a record keeps its body (record version 2 and later).
mod method {
    /// The bytes as received.
    pub const RAW: u8 = 0;
    /// Raw deflate (RFC 1951) primed with [`super::DICTIONARY`].
    pub const DEFLATE_DICT_1: u8 = 1;
}

/// What deflate is primed with: the field names and fixed parts of a muapi
/// callback as muapi documents them, and of common generic webhook bodies.
/// A body of a few hundred bytes repeats little of itself, so plain deflate
/// saves about a third of a muapi callback; primed, it saves about three
/// quarters. The bytes are part of the file format: a different dictionary
/// needs a new method number, and this one must stay readable.
const DICTIONARY: &[u8] =
    b"{\"type\":\"\",\"data\":{\"object\":\"\",\"event\":\"\",\"timestamp\":\"\",\
\"created\":\"id\":\"\",\"outputs\":[\"https://\"],\"urls\":{\"get\":\
\"https://api.muapi.ai/api/v1/predictions//result\"},\"has_nsfw_contents\":[false],\
\"status\":\"failed\",\"status\":\"completed\",\"created_at\":\"20\",\"error\":null,\
\"executionTime\":,\"timings\":{\"inference\":";

/// Bodies shorter than this are kept raw: deflate cannot win much there.
const DEFLATE_FROM: usize = 48;

/// deflate's window: 32 KiB, the most the format allows, so the dictionary
/// stays within reach of a body's first bytes whatever its size.
const WINDOW_BITS: u8 = 15;

thread_local! {
    /// One compressor per thread, reset for each body: setting one up
    /// allocates a few hundred KiB, which a body of 400 bytes should not pay.
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    /// The same for reading bodies back.
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A body as an event record keeps it: its length as received (the admin
/// API shows it without inflating anything), and its bytes raw or
/// deflated, whichever is smaller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredBody {
    /// Length as received.
    len: u64,
    /// One of [`method`]'s numbers.
    method: u8,
    /// The bytes as stored; empty in a record read without its body.
    data: Bytes,
}

impl StoredBody {
    /// Packs a body as received: deflated when that makes it smaller.
    pub fn pack(raw: &Bytes) -> Self {
        if raw.len() >= DEFLATE_FROM {
            if let Some(data) = deflate(raw) {
                return Self {
                    len: raw.len() as u64,
                    method: method::DEFLATE_DICT_1,
                    data: Bytes::from(data),
                };
            }
        }
        Self::raw(raw.clone())
    }

    /// A body kept as received (what version 1 records hold).
    pub fn raw(raw: Bytes) -> Self {
        Self {
            len: raw.len() as u64,
            method: method::RAW,
            data: raw,
        }
    }

    /// Length of the body as received.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body as received is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes it takes in the record (without its small header).
    pub fn stored_len(&self) -> usize {
        self.data.len()
    }

    /// The body exactly as received.
    pub fn unpack(&self) -> Result<Bytes, StoreError> {
        match self.method {
            method::RAW if self.data.len() as u64 == self.len => Ok(self.data.clone()),
            method::RAW => Err(corrupt("body length does not match")),
            method::DEFLATE_DICT_1 => inflate(&self.data, self.len).map(Bytes::from),
            _ => Err(corrupt("unknown body encoding")),
        }
    }
}

/// Deflates `raw` primed with the dictionary; `None` when the result would
/// not be smaller (or deflate refuses, which it should not).
fn deflate(raw: &[u8]) -> Option<Vec<u8>> {
    DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        // Level 1: 104 bytes for the 389-byte muapi callback in 2.7 µs;
        // level 6 saves 4 more bytes for 6.7 µs (`cargo bench --bench micro
        // -- stored_body`).
        let c = cell.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(1), false, WINDOW_BITS)
        });
        c.reset();
        c.set_dictionary(DICTIONARY).ok()?;
        // Room for one byte less than the body: a result that needs more
        // is not worth keeping, and deflate stops short instead.
        let mut out = Vec::with_capacity(raw.len() - 1);
        match c.compress_vec(raw, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if c.total_in() == raw.len() as u64 => {
                // Kept until the commit: no room to spare beside it.
                out.shrink_to_fit();
                Some(out)
            }
            _ => None,
        }
    })
}

/// Inflates a body deflated by [`deflate`], which must come out exactly
/// `len` bytes long. The buffer grows as the stream yields bytes, so a
/// damaged length cannot become a huge allocation up front.
fn inflate(data: &[u8], len: u64) -> Result<Vec<u8>, StoreError> {
    // deflate cannot expand more than 1032:1.
    if len > (data.len() as u64).saturating_mul(1032) {
        return Err(corrupt("body length does not match"));
    }
    let len = usize::try_from(len).map_err(|_| corrupt("body length does not match"))?;
    INFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| Decompress::new_with_window_bits(false, WINDOW_BITS));
        d.reset(false);
        d.set_dictionary(DICTIONARY)
            .map_err(|_| corrupt("body does not inflate"))?;
        let mut out = Vec::with_capacity(len.min(64 * 1024));
        loop {
            let consumed = d.total_in() as usize;
            let status = d
                .decompress_vec(&data[consumed..], &mut out, FlushDecompress::Finish)
                .map_err(|_| corrupt("body does not inflate"))?;
            match status {
                Status::StreamEnd => break,
                // Out of room: grow towards the stated length, never past it.
                _ if out.len() == out.capacity() && out.len() < len => {
                    out.reserve((len - out.len()).min(out.len().max(64 * 1024)));
                }
                _ => return Err(corrupt("body does not inflate")),
            }
        }
        if out.len() == len && d.total_in() == data.len() as u64 {
            Ok(out)
        } else {
            Err(corrupt("body does not inflate"))
        }
    })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Appends to a byte buffer.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            // 0 means absent; a present string is stored with length + 1.
            None => self.varint(0),
            Some(s) => {
                self.varint(s.len() as u64 + 1);
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Reads from a byte slice, refusing to run past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, StoreError> {
        let v = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| corrupt("record ends early"))?;
        self.pos += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("varint longer than 64 bits"))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        u32::try_from(self.varint()?).map_err(|_| corrupt("number out of range"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| corrupt("length runs past the record"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.varint()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
    }

    fn opt_str(&mut self) -> Result<Option<String>, StoreError> {
        match self.varint()? {
            0 => Ok(None),
            n => {
                let raw = self.take((n - 1) as usize)?;
                String::from_utf8(raw.to_vec())
                    .map(Some)
                    .map_err(|_| corrupt("string is not UTF-8"))
            }
        }
    }

    fn version(&mut self) -> Result<u8, StoreError> {
        let v = self.u8()?;
        if v == 0 || v > VERSION {
            return Err(StoreError::Corrupt(format!(
                "record version {v} is not one this hookrelay reads (it reads 1 to {VERSION})"
            )));
        }
        Ok(v)
    }
}

fn origin_code(o: Origin) -> u8 {
    match o {
        Origin::Callback => 0,
        Origin::Reconciled => 1,
    }
}

fn origin_from(code: u8) -> Result<Origin, StoreError> {
    match code {
        0 => Ok(Origin::Callback),
        1 => Ok(Origin::Reconciled),
        _ => Err(corrupt("unknown origin")),
    }
}

fn state_code(s: DeliveryState) -> u8 {
    match s {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Dead => 2,
        DeliveryState::Deleted => 3,
    }
}

fn state_from(code: u8) -> Result<DeliveryState, StoreError> {
    match code {
        0 => Ok(DeliveryState::Pending),
        1 => Ok(DeliveryState::Delivered),
        2 => Ok(DeliveryState::Dead),
        3 => Ok(DeliveryState::Deleted),
        _ => Err(corrupt("unknown delivery state")),
    }
}

/// Encodes an event record (current version).
pub fn encode_event(e: &EventRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        96 + e.body.stored_len() + 24 * e.deliveries.len(),
    ));
    let base = e.received_ms;
    let rel = |t: u64| t.saturating_sub(base);
    w.u8(VERSION);
    w.0.extend_from_slice(&e.id.to_bytes());
    w.varint(e.received_ms);
    w.varint(u64::from(e.route));
    w.u8(origin_code(e.origin));
    w.opt_str(e.status.as_deref());
    w.opt_str(e.source_id.as_deref());
    w.varint(e.headers.len() as u64);
    for (name, value) in &e.headers {
        w.bytes(name.as_bytes());
        w.bytes(value.as_bytes());
    }
    w.varint(e.deliveries.len() as u64);
    for d in &e.deliveries {
        w.varint(u64::from(d.lane));
        w.u8(state_code(d.state));
        w.varint(u64::from(d.attempts));
        w.varint(rel(d.due_ms));
        w.varint(rel(d.schedule_start_ms));
        w.varint(rel(d.updated_ms));
        w.opt_str(d.dead_reason.as_deref());
        w.varint(d.history.len() as u64);
        for a in &d.history {
            w.varint(u64::from(a.attempt));
            w.varint(rel(a.at_ms));
            w.varint(u64::from(a.status.unwrap_or(0)));
            w.opt_str(a.error.as_deref());
            w.varint(a.duration_ms);
        }
    }
    w.varint(e.body.len);
    w.u8(e.body.method);
    w.bytes(&e.body.data);
    w.0
}

/// Decodes an event record; `with_body` false skips copying the body.
pub fn decode_event(buf: &[u8], with_body: bool) -> Result<EventRecord, StoreError> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.version()?;
    let id: [u8; 16] = r
        .take(16)?
        .try_into()
        .map_err(|_| corrupt("short event id"))?;
    let received_ms = r.varint()?;
    let abs = |delta: u64| received_ms.saturating_add(delta);
    let route = r.u32()?;
    let origin = origin_from(r.u8()?)?;
    let status = r.opt_str()?;
    let source_id = r.opt_str()?;
    let n = r.varint()? as usize;
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        headers.push((r.string()?, r.string()?));
    }
    let n = r.varint()? as usize;
    let mut deliveries = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let lane = r.u32()?;
        let state = state_from(r.u8()?)?;
        let attempts = r.u32()?;
        let due_ms = abs(r.varint()?);
        let schedule_start_ms = abs(r.varint()?);
        let updated_ms = abs(r.varint()?);
        let dead_reason = r.opt_str()?;
        let h = r.varint()? as usize;
        let mut history = Vec::with_capacity(h.min(ATTEMPT_HISTORY));
        for _ in 0..h {
            let attempt = r.u32()?;
            let at_ms = abs(r.varint()?);
            let status = match r.varint()? {
                0 => None,
                s => Some(u16::try_from(s).map_err(|_| corrupt("status out of range"))?),
            };
            let error = r.opt_str()?;
            let duration_ms = r.varint()?;
            history.push(AttemptRecord {
                attempt,
                at_ms,
                status,
                error,
                duration_ms,
            });
        }
        deliveries.push(DeliveryRecord {
            lane,
            state,
            attempts,
            due_ms,
            schedule_start_ms,
            updated_ms,
            dead_reason,
            history,
        });
    }
    let body = if version == 1 {
        let data = r.bytes()?;
        StoredBody {
            len: data.len() as u64,
            method: method::RAW,
            data: if with_body {
                Bytes::copy_from_slice(data)
            } else {
                Bytes::new()
            },
        }
    } else {
        let len = r.varint()?;
        let method = r.u8()?;
        let data = r.bytes()?;
        StoredBody {
            len,
            method,
            data: if with_body {
                Bytes::copy_from_slice(data)
            } else {
                Bytes::new()
            },
        }
    };
    Ok(EventRecord {
        id: EventId::from_bytes(id),
        received_ms,
        route,
        origin,
        status,
        source_id,
        headers,
        deliveries,
        body,
    })
}

/// The body of an encoded event record, as received.
pub fn event_body(buf: &[u8]) -> Result<Bytes, StoreError> {
    decode_event(buf, true).and_then(|e| e.body.unpack())
}

/// Encodes a `keys` value (current version).
pub fn encode_key(k: &KeyRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(16));
    w.u8(VERSION);
    w.varint(k.received_ms);
    w.varint(k.seq);
    w.varint(u64::from(k.route));
    w.0
}

/// Decodes a `keys` value.
pub fn decode_key(buf: &[u8]) -> Result<KeyRecord, StoreError> {
    let mut r = Reader { buf, pos: 0 };
    let _version = r.version()?;
    Ok(KeyRecord {
        received_ms: r.varint()?,
        seq: r.varint()?,
        route: r.u32()?,
    })
}

/// An expected task (muapi reconciliation), as the embedded store keeps it;
/// the route and the task id are its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRecord {
    /// The endpoint it was submitted to.
    pub endpoint: String,
    /// Submission time, unix ms.
    pub submitted_ms: u64,
    /// Where it stands.
    pub state: ExpectedState,
    /// How its result came, when done.
    pub settled_by: Option<Origin>,
    /// Its final status, when done.
    pub status: Option<String>,
    /// Polls so far.
    pub polls: u32,
    /// Next poll (open tasks), unix ms.
    pub next_poll_ms: u64,
    /// Last change, unix ms.
    pub updated_ms: u64,
    /// What the last poll saw.
    pub last_result: Option<String>,
}

fn expected_code(s: ExpectedState) -> u8 {
    match s {
        ExpectedState::Waiting => 0,
        ExpectedState::Polling => 1,
        ExpectedState::Done => 2,
        ExpectedState::Expired => 3,
    }
}

/// The number an expected state is stored as.
pub fn expected_state_code(s: ExpectedState) -> u8 {
    expected_code(s)
}

fn expected_from(code: u8) -> Result<ExpectedState, StoreError> {
    Ok(match code {
        0 => ExpectedState::Waiting,
        1 => ExpectedState::Polling,
        2 => ExpectedState::Done,
        3 => ExpectedState::Expired,
        _ => return Err(corrupt("unknown expected-task state")),
    })
}

/// The state stored under a number.
pub fn expected_state_from(code: u8) -> Result<ExpectedState, StoreError> {
    expected_from(code)
}

/// Encodes an expected task (current version).
pub fn encode_expected(e: &ExpectedRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(48 + e.endpoint.len()));
    w.u8(VERSION);
    w.bytes(e.endpoint.as_bytes());
    w.varint(e.submitted_ms);
    w.u8(expected_code(e.state));
    w.u8(match e.settled_by {
        None => 0,
        Some(o) => 1 + origin_code(o),
    });
    w.opt_str(e.status.as_deref());
    w.varint(u64::from(e.polls));
    w.varint(e.next_poll_ms);
    w.varint(e.updated_ms);
    w.opt_str(e.last_result.as_deref());
    w.0
}

/// Decodes an expected task.
pub fn decode_expected(buf: &[u8]) -> Result<ExpectedRecord, StoreError> {
    let mut r = Reader { buf, pos: 0 };
    let _version = r.version()?;
    Ok(ExpectedRecord {
        endpoint: r.string()?,
        submitted_ms: r.varint()?,
        state: expected_from(r.u8()?)?,
        settled_by: match r.u8()? {
            0 => None,
            n => Some(origin_from(n - 1)?),
        },
        status: r.opt_str()?,
        polls: r.u32()?,
        next_poll_ms: r.varint()?,
        updated_ms: r.varint()?,
        last_result: r.opt_str()?,
    })
}

/// A stable 64-bit hash (FNV-1a) of a route and a source id, for the
/// source-id index: persisted, so it must never change between builds.
pub fn source_hash(route: u32, source_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in route
        .to_be_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(source_id.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventRecord {
        EventRecord {
            id: EventId(42),
            received_ms: 1_795_000_000_000,
            route: 1,
            origin: Origin::Reconciled,
            status: Some("completed".into()),
            source_id: Some("task-1".into()),
            headers: vec![("content-type".into(), "application/json".into())],
            deliveries: vec![
                DeliveryRecord {
                    lane: 2,
                    state: DeliveryState::Dead,
                    attempts: 2,
                    due_ms: 1_795_000_000_500,
                    schedule_start_ms: 1_795_000_000_000,
                    updated_ms: 1_795_000_001_000,
                    dead_reason: Some("subscriber answered 410 Gone".into()),
                    history: vec![
                        AttemptRecord {
                            attempt: 1,
                            at_ms: 1_795_000_000_010,
                            status: None,
                            error: Some("connect error".into()),
                            duration_ms: 3,
                        },
                        AttemptRecord {
                            attempt: 2,
                            at_ms: 1_795_000_000_900,
                            status: Some(410),
                            error: None,
                            duration_ms: 100,
                        },
                    ],
                },
                DeliveryRecord {
                    lane: 3,
                    state: DeliveryState::Pending,
                    attempts: 0,
                    due_ms: 1_795_000_000_000,
                    schedule_start_ms: 1_795_000_000_000,
                    updated_ms: 1_795_000_000_000,
                    dead_reason: None,
                    history: vec![],
                },
            ],
            body: StoredBody::pack(&Bytes::from_static(
                br#"{"id":"task-1","status":"completed","error":null,"outputs":["https://cdn.example/task-1.png"]}"#,
            )),
        }
    }

    fn muapi(id: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"{id}","outputs":["https://cdn.muapi.ai/outputs/{id}/out-0.png"],"urls":{{"get":"https://api.muapi.ai/api/v1/predictions/{id}/result"}},"has_nsfw_contents":[false],"status":"completed","created_at":"2026-11-27T00:00:00.000Z","error":null,"executionTime":1234,"timings":{{"inference":1.234}}}}"#
        ))
    }

    #[test]
    fn event_records_round_trip() {
        let e = sample();
        let bytes = encode_event(&e);
        assert_eq!(decode_event(&bytes, true).unwrap(), e);
        let light = decode_event(&bytes, false).unwrap();
        assert_eq!(
            light.body.stored_len(),
            0,
            "the body's bytes are not copied"
        );
        assert_eq!(light.body.len(), e.body.len(), "its length is known");
        assert_eq!(light.deliveries, e.deliveries);
        assert_eq!(event_body(&bytes).unwrap(), e.body.unpack().unwrap());
        assert_eq!(e.open(), 2);
    }

    #[test]
    fn version_1_records_stay_readable() {
        // Bytes written by the first version of this format: a later format
        // must keep decoding them (add a decoder, never change this one).
        let v1: &[u8] = &[
            1, // version
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, // id
            232, 7, // received 1000
            1, // route
            0, // origin callback
            3, b'o', b'k', // status "ok" (length + 1)
            0,    // no source id
            0,    // no headers
            1,    // one delivery
            2, 1, 1, 0, 0, 5,
            0, // lane 2, delivered, 1 attempt, due +0, start +0, updated +5, no reason
            1, 1, 1, 200, 1, 0, 4, // history: attempt 1 at +1, status 200, no error, 4 ms
            2, b'{', b'}', // body
        ];
        let e = decode_event(v1, true).unwrap();
        assert_eq!(e.id, EventId(7));
        assert_eq!(e.received_ms, 1000);
        assert_eq!(e.status.as_deref(), Some("ok"));
        assert_eq!(e.deliveries[0].state, DeliveryState::Delivered);
        assert_eq!(e.deliveries[0].updated_ms, 1005);
        assert_eq!(e.deliveries[0].history[0].status, Some(200));
        assert_eq!(&e.body.unpack().unwrap()[..], b"{}");
        assert_eq!(e.body.len(), 2);
    }

    #[test]
    fn a_muapi_body_is_kept_in_a_third_of_its_size_and_comes_back_exact() {
        let raw = muapi("3f2a9c1e-7b4d-4a12-a034-0000000004d2");
        assert_eq!(raw.len(), 389);
        let packed = StoredBody::pack(&raw);
        assert_eq!(packed.method, method::DEFLATE_DICT_1);
        assert!(packed.stored_len() <= 120, "{} bytes", packed.stored_len());
        assert_eq!(packed.len(), 389);
        assert_eq!(packed.unpack().unwrap(), raw);
        // Many in a row on one thread reuse the compressor correctly.
        for i in 0..200 {
            let raw = muapi(&format!("task-{i}"));
            assert_eq!(StoredBody::pack(&raw).unpack().unwrap(), raw);
        }
    }

    #[test]
    fn bodies_that_do_not_shrink_are_kept_raw() {
        // Empty, and at the edge of where deflate is tried.
        for n in [0, DEFLATE_FROM - 1, DEFLATE_FROM] {
            let raw = Bytes::from("a".repeat(n));
            let packed = StoredBody::pack(&raw);
            assert_eq!(packed.method == method::RAW, n < DEFLATE_FROM, "{n}");
            assert_eq!(packed.unpack().unwrap(), raw);
        }
        // Short, and incompressible (a fixed pseudo-random sequence).
        let short = Bytes::from_static(br#"{"id":"x","status":"completed"}"#);
        assert_eq!(StoredBody::pack(&short).method, method::RAW);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let noise = Bytes::from(noise);
        let packed = StoredBody::pack(&noise);
        assert_eq!(packed.method, method::RAW);
        assert_eq!(packed.unpack().unwrap(), noise);
        // A large, repetitive body deflates and comes back exact.
        let big = Bytes::from("{\"a\":1},".repeat(100_000));
        let packed = StoredBody::pack(&big);
        assert!(packed.stored_len() < big.len() / 50);
        assert_eq!(packed.unpack().unwrap(), big);
    }

    #[test]
    fn version_2_records_stay_readable() {
        // Bytes written by version 2 (this format, muapi body deflated):
        // a later compressor may deflate differently, but these must
        // always read back to the same body.
        let raw = muapi("fixture-task-1");
        let e = decode_event(V2_RECORD, true).unwrap();
        assert_eq!(e.id, EventId(7));
        assert_eq!(e.body.method, method::DEFLATE_DICT_1);
        assert_eq!(e.body.unpack().unwrap(), raw);
    }

    #[test]
    fn cut_or_mislabelled_bodies_are_refused_not_misread() {
        // Deflate carries no checksum (neither did raw bodies): what is
        // checked is that the stream ends where the record says and comes
        // out exactly as long as the body was.
        let packed = StoredBody::pack(&muapi("task-1"));
        for (data, len) in [
            (packed.data.slice(..packed.data.len() - 3), packed.len),
            (packed.data.clone(), packed.len + 1),
            (packed.data.clone(), packed.len - 1),
            (packed.data.clone(), u64::MAX),
        ] {
            let damaged = StoredBody {
                len,
                method: method::DEFLATE_DICT_1,
                data,
            };
            assert!(damaged.unpack().is_err());
        }
        // Bytes after the end of the stream are damage too.
        let mut trailing = packed.data.to_vec();
        trailing.push(0);
        let padded = StoredBody {
            len: packed.len,
            method: method::DEFLATE_DICT_1,
            data: Bytes::from(trailing),
        };
        assert!(padded.unpack().is_err());
        let unknown = StoredBody {
            method: 9,
            ..packed
        };
        assert!(unknown.unpack().is_err());
    }

    /// See `version_2_records_stay_readable`: version 2, id 7, received
    /// 1000, route 1, callback, status "completed", no source id, no
    /// headers, no deliveries; then the body: 323 bytes as received
    /// (varint 195 2), method 1, 85 bytes of deflate.
    const V2_RECORD: &[u8] = &[
        2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 232, 7, 1, 0, 10, 99, 111, 109, 112,
        108, 101, 116, 101, 100, 0, 0, 0, 195, 2, 1, 85, 171, 134, 120, 53, 45, 179, 162, 164, 180,
        40, 85, 183, 36, 177, 56, 91, 215, 16, 187, 199, 147, 83, 242, 16, 222, 131, 202, 235, 163,
        106, 4, 9, 235, 26, 232, 21, 228, 165, 147, 31, 74, 104, 38, 146, 24, 102, 120, 66, 200,
        200, 76, 215, 208, 80, 215, 200, 60, 196, 192, 192, 10, 140, 244, 12, 12, 12, 162, 8, 132,
        155, 161, 145, 177, 9, 174, 176, 51, 212, 51, 50, 54, 169, 173, 5, 0,
    ];

    #[test]
    fn corrupt_and_future_records_are_refused_not_misread() {
        let bytes = encode_event(&sample());
        for cut in 0..bytes.len() {
            assert!(decode_event(&bytes[..cut], true).is_err(), "cut at {cut}");
        }
        let mut future = bytes.clone();
        future[0] = VERSION + 1;
        let err = decode_event(&future, true).unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn keys_round_trip_and_stay_small() {
        let k = KeyRecord {
            received_ms: 1_795_000_000_000,
            seq: 123_456,
            route: 1,
        };
        let bytes = encode_key(&k);
        assert!(bytes.len() <= 12, "{} bytes", bytes.len());
        assert_eq!(decode_key(&bytes).unwrap(), k);
    }

    #[test]
    fn expected_tasks_round_trip() {
        let e = ExpectedRecord {
            endpoint: "flux-dev-image".into(),
            submitted_ms: 1_795_000_000_000,
            state: ExpectedState::Done,
            settled_by: Some(Origin::Reconciled),
            status: Some("completed".into()),
            polls: 3,
            next_poll_ms: 1_795_000_060_000,
            updated_ms: 1_795_000_061_000,
            last_result: Some("processing".into()),
        };
        assert_eq!(decode_expected(&encode_expected(&e)).unwrap(), e);
    }

    #[test]
    fn source_hash_is_stable() {
        // Persisted in the index: a change would orphan every entry.
        assert_eq!(source_hash(1, "task-1"), source_hash(1, "task-1"));
        assert_ne!(source_hash(1, "task-1"), source_hash(2, "task-1"));
        assert_eq!(source_hash(0, "task-1"), 0x7a81_01e4_9862_4420);
    }
}
