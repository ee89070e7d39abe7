//! Micro-benchmarks of the hot paths (criterion): intake parsing and keying,
//! Standard Webhooks signing, the idempotency cache at a million keys, the
//! store's group commit at batch sizes 1, 16 and 256, and packing a body
//! for the embedded store (deflate primed with a dictionary) and back.
//!
//! Run: `cargo bench --bench micro`. Results and method: BENCHMARKS.md.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hookrelay::config::Filter;
use hookrelay::intake::idempotency::{Claim, IdempotencyCache};
use hookrelay::intake::{event_digest, muapi};
use hookrelay::store::codec::StoredBody;
use hookrelay::store::embedded::{EmbeddedOptions, EmbeddedStore};
use hookrelay::store::{EventId, NewEvent, Origin, Store};

fn muapi_payload(id: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "outputs": ["https://cdn.muapi.ai/outputs/6a1e0c4e/out-0.png"],
        "urls": {"get": format!("https://api.muapi.ai/api/v1/predictions/{id}/result")},
        "has_nsfw_contents": [false],
        "status": "completed",
        "created_at": "2026-11-27T00:00:00.000Z",
        "error": null,
        "executionTime": 1234,
        "timings": {"inference": 1.234}
    })
    .to_string()
    .into_bytes()
}

fn intake(c: &mut Criterion) {
    let body = muapi_payload("6a1e0c4e-3f1b-4a7e-9d43-2b0c8f6e1a11");
    let filter = Filter {
        statuses: Some(vec!["completed".into(), "failed".into()]),
        json: vec![],
    };
    let mut group = c.benchmark_group("intake");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("muapi_parse_key_filter", |b| {
        b.iter(|| {
            let head = muapi::parse(&body).unwrap();
            let digest = event_digest("muapi", &head.key());
            (digest, filter.matches(Some(&head.status), None))
        })
    });
    // For comparison: what a full JSON tree costs (built only when a
    // subscriber filters on a JSON pointer).
    group.bench_function("json_tree_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    });
    group.finish();
}

fn signing(c: &mut Criterion) {
    let body = vec![b'x'; 1024];
    let keys: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 32]).collect();
    let mut group = c.benchmark_group("sign_1KiB");
    group.throughput(Throughput::Bytes(1024));
    for n in [1usize, 3] {
        group.bench_with_input(BenchmarkId::new("secrets", n), &n, |b, &n| {
            b.iter(|| {
                hookrelay::signing::sign(&keys[..n], "KxmVU3sD0m5Zf0hQq0m2zA", 1_764_201_600, &body)
            })
        });
    }
    group.finish();
}

fn idempotency(c: &mut Criterion) {
    const KEYS: u128 = 1_000_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = IdempotencyCache::new(u64::MAX / 2, KEYS as usize + 1);
    for k in 0..KEYS {
        cache.insert_committed(event_digest("muapi", &format!("task-{k}\ncompleted")), 1);
    }
    let mut group = c.benchmark_group("idempotency_1M_keys");
    let mut probe = 0u128;
    group.bench_function("lookup_duplicate", |b| {
        b.iter(|| {
            probe = (probe + 7919) % KEYS;
            let key = event_digest("muapi", &format!("task-{probe}\ncompleted"));
            runtime.block_on(async { matches!(cache.claim(key, 2).await, Claim::Duplicate) })
        })
    });
    let mut fresh = KEYS;
    group.bench_function("claim_and_commit_new", |b| {
        b.iter(|| {
            fresh += 1;
            let key = event_digest("muapi", &format!("task-{fresh}\ncompleted"));
            runtime.block_on(async {
                if let Claim::Owner(guard) = cache.claim(key, 2).await {
                    guard.commit(2);
                }
            })
        })
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from(muapi_payload("6a1e0c4e-3f1b-4a7e-9d43-2b0c8f6e1a11"));
    let mut group = c.benchmark_group("store_group_commit");
    group.sample_size(20);
    for batch in [1usize, 16, 256] {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(
                dir.path(),
                EmbeddedOptions {
                    max_batch: batch,
                    ..EmbeddedOptions::default()
                },
            )
            .unwrap(),
        );
        let mut next = 0u64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.to_async(&runtime).iter_batched(
                || {
                    (0..batch)
                        .map(|_| {
                            next += 1;
                            // Real event ids: URL-safe base64 of a digest, so
                            // the idempotency index sees random keys.
                            let digest = event_digest("muapi", &format!("task-{next}\ncompleted"));
                            NewEvent {
                                id: EventId(digest),
                                route: Arc::from("muapi"),
                                received_ms: next,
                                source_id: Some(format!("task-{next}")),
                                status: Some("completed".into()),
                                origin: Origin::Callback,
                                headers: vec![("content-type".into(), "application/json".into())],
                                body: body.clone(),
                                subscribers: vec![
                                    Arc::from("app"),
                                    Arc::from("analytics"),
                                    Arc::from("notify"),
                                ],
                                ttl_ms: 72 * 3600 * 1000,
                                settles: false,
                            }
                        })
                        .collect::<Vec<_>>()
                },
                |events| {
                    let store = store.clone();
                    async move {
                        // All appends wait together, as concurrent ingress requests do.
                        let waits: Vec<_> = events
                            .into_iter()
                            .map(|e| {
                                let store = store.clone();
                                tokio::spawn(async move { store.append(e).await.unwrap() })
                            })
                            .collect();
                        for w in waits {
                            w.await.unwrap();
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn body_packing(c: &mut Criterion) {
    let raw = Bytes::from(muapi_payload("6a1e0c4e-3f1b-4a7e-9d43-2b0c8f6e1a11"));
    let packed = StoredBody::pack(&raw);
    let mut group = c.benchmark_group("stored_body");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("pack_muapi", |b| b.iter(|| StoredBody::pack(&raw)));
    group.bench_function("unpack_muapi", |b| b.iter(|| packed.unpack().unwrap()));
    group.finish();
}

criterion_group!(
    benches,
    intake,
    signing,
    idempotency,
    group_commit,
    body_packing
);
criterion_main!(benches);
