//! Converting a store written by hookrelay 0.1 (redb 2 file format, JSON
//! records) into the current one, at start, before the store opens.
//!
//! The old file is read with redb 2.6 (the last version that reads its file
//! format), every event, delivery, dead letter and key is written into a
//! new file in the current layout, and only then are the files swapped: the
//! old one stays beside the new as `hookrelay.redb.0.1.bak`. A crash
//! during the conversion leaves the old file untouched (the half-written
//! new file is discarded at the next start).

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use redb2::ReadableTable as _;
use serde::Deserialize;

use super::codec::{DeliveryRecord, EventRecord, KeyRecord, StoredBody};
use super::{AttemptRecord, DeliveryState, EventId, Origin, StoreError};

/// The 0.1 tables (as 0.1 defined them).
mod old {
    use redb2::TableDefinition;
    pub const IDS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ids");
    pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
    pub const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
    pub const DELIVERIES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("deliveries");
}

#[derive(Deserialize)]
struct OldEvent {
    event_id: String,
    route: String,
    received_ms: u64,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    subscribers: Vec<String>,
}

#[derive(Deserialize)]
struct OldAttempt {
    attempt: u32,
    at_ms: u64,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<String>,
    duration_ms: u64,
}

#[derive(Deserialize)]
struct OldDelivery {
    state: String,
    attempts: u32,
    due_ms: u64,
    #[serde(default)]
    schedule_start_ms: u64,
    received_ms: u64,
    updated_ms: u64,
    #[serde(default)]
    dead_reason: Option<String>,
    #[serde(default)]
    history: Vec<OldAttempt>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("converting the 0.1 store: {e}"))
}

/// Converts `path`, written by hookrelay 0.1, in place (the caller found
/// that redb needs an upgrade to open it).
pub(super) fn convert_0_1(path: &Path, cache_bytes: usize) -> Result<(), StoreError> {
    let partial = path.with_extension("redb.converting");
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(backend)?;
    }
    tracing::warn!(path = %path.display(), "store written by hookrelay 0.1: converting it");
    let old = match redb2::Database::open(path) {
        Ok(db) => db,
        Err(redb2::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Locked(path.display().to_string()))
        }
        Err(e) => return Err(backend(e)),
    };
    let counts = convert(&old, &partial, cache_bytes)?;
    drop(old);
    let backup = path.with_extension("redb.0.1.bak");
    std::fs::rename(path, &backup).map_err(backend)?;
    std::fs::rename(&partial, path).map_err(backend)?;
    tracing::warn!(
        events = counts.0,
        pending = counts.1,
        dead_letters = counts.2,
        backup = %backup.display(),
        "store converted; the old file is kept as a backup and may be removed"
    );
    Ok(())
}

/// Writes every 0.1 record into a new file at `to`; returns (events,
/// pending deliveries, dead letters).
fn convert(
    old: &redb2::Database,
    to: &Path,
    cache_bytes: usize,
) -> Result<(usize, usize, usize), StoreError> {
    let read = old.begin_read().map_err(backend)?;
    let ids = read.open_table(old::IDS).map_err(backend)?;
    let events = read.open_table(old::EVENTS).map_err(backend)?;
    let bodies = read.open_table(old::BODIES).map_err(backend)?;
    let deliveries = read.open_table(old::DELIVERIES).map_err(backend)?;

    let new = super::embedded::create_for_upgrade(to, cache_bytes)?;
    let mut names: HashMap<String, u32> = HashMap::new();
    let mut converted = (0, 0, 0);
    let txn = new.begin_write().map_err(backend)?;
    {
        let mut w = super::embedded::RawWriter::open(&txn)?;
        let mut name = |w: &mut super::embedded::RawWriter, n: String| -> Result<u32, StoreError> {
            if let Some(id) = names.get(&n) {
                return Ok(*id);
            }
            let id = w.add_name(&n)?;
            names.insert(n, id);
            Ok(id)
        };
        for entry in events.iter().map_err(backend)? {
            let (seq, meta) = entry.map_err(backend)?;
            let seq = seq.value();
            let meta: OldEvent = serde_json::from_slice(meta.value()).map_err(backend)?;
            let Ok(id) = meta.event_id.parse::<EventId>() else {
                continue;
            };
            let route = name(&mut w, meta.route.clone())?;
            let body = bodies
                .get(seq)
                .map_err(backend)?
                .map(|b| Bytes::copy_from_slice(b.value()))
                .unwrap_or_default();
            let mut record = EventRecord {
                id,
                received_ms: meta.received_ms,
                route,
                origin: Origin::Callback,
                status: None,
                source_id: None,
                headers: meta.headers,
                deliveries: Vec::new(),
                body: StoredBody::pack(&body),
            };
            for sub in &meta.subscribers {
                let Some(raw) = deliveries.get((seq, sub.as_str())).map_err(backend)? else {
                    continue;
                };
                let d: OldDelivery = serde_json::from_slice(raw.value()).map_err(backend)?;
                let lane = name(&mut w, format!("{}/{sub}", meta.route))?;
                let deleted = d
                    .dead_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("deleted dead letter: "));
                let state = match d.state.as_str() {
                    "pending" => DeliveryState::Pending,
                    "dead" => DeliveryState::Dead,
                    _ if deleted => DeliveryState::Deleted,
                    _ => DeliveryState::Delivered,
                };
                let dead_reason = d.dead_reason.map(|r| {
                    r.strip_prefix("deleted dead letter: ")
                        .map(str::to_string)
                        .unwrap_or(r)
                });
                record.deliveries.push(DeliveryRecord {
                    lane,
                    state,
                    attempts: d.attempts,
                    due_ms: d.due_ms,
                    schedule_start_ms: d.schedule_start_ms.max(d.received_ms),
                    updated_ms: d.updated_ms,
                    dead_reason,
                    history: d
                        .history
                        .into_iter()
                        .map(|a| AttemptRecord {
                            attempt: a.attempt,
                            at_ms: a.at_ms,
                            status: a.status,
                            error: a.error,
                            duration_ms: a.duration_ms,
                        })
                        .collect(),
                });
            }
            let received = ids
                .get(meta.event_id.as_str())
                .map_err(backend)?
                .map_or(meta.received_ms, |v| v.value().1);
            w.put_key(
                id,
                &KeyRecord {
                    received_ms: received,
                    seq,
                    route,
                },
            )?;
            for d in &record.deliveries {
                match d.state {
                    DeliveryState::Pending => converted.1 += 1,
                    DeliveryState::Dead => converted.2 += 1,
                    _ => {}
                }
            }
            w.put_event(seq, &record)?;
            converted.0 += 1;
        }
        w.finish()?;
    }
    txn.commit().map_err(backend)?;
    drop(new);
    Ok(converted)
}
