//! The store contract, one suite run against every backend: append and
//! duplicates, claims, attempts, due order, dead letters (list, replay,
//! delete), orphans, pruning with two windows, listings, and durability
//! across a reopen. Times are passed explicitly, so nothing here sleeps.

use std::sync::Arc;

use bytes::Bytes;
use hookrelay::store::{
    AppendOutcome, AttemptRecord, AttemptUpdate, DeadLetterQuery, DeadSelector, DeliveryId,
    DeliveryState, EventId, EventQuery, NewEvent, Next, Origin, PrunePolicy, Recorded, Store,
};

const T0: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn event(n: u128, subscribers: &[&str], at: u64) -> NewEvent {
    NewEvent {
        id: EventId(n),
        route: Arc::from("muapi"),
        received_ms: at,
        source_id: Some(format!("task-{n}")),
        status: Some("completed".into()),
        origin: Origin::Callback,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(format!(r#"{{"id":"task-{n}","status":"completed"}}"#)),
        subscribers: subscribers.iter().map(|s| Arc::from(*s)).collect(),
        ttl_ms: 72 * HOUR,
        settles: false,
    }
}

fn update(
    n: u128,
    subscriber: &str,
    attempt: u32,
    status: u16,
    at: u64,
    next: Next,
) -> AttemptUpdate {
    AttemptUpdate {
        event: EventId(n),
        route: Arc::from("muapi"),
        subscriber: Arc::from(subscriber),
        attempt: Some(AttemptRecord {
            attempt,
            at_ms: at,
            status: Some(status),
            error: None,
            duration_ms: 3,
        }),
        next,
    }
}

fn retry(due_ms: u64) -> Next {
    Next::Retry {
        due_ms,
        keep_claim: false,
    }
}

fn dead(reason: &str) -> Next {
    Next::Dead {
        reason: reason.into(),
    }
}

fn policy(now: u64) -> PrunePolicy {
    PrunePolicy {
        now_ms: now,
        retention_ms: 24 * HOUR,
        ttl_ms: 72 * HOUR,
        dead_letter_retention_ms: 14 * 24 * HOUR,
        max_items: 1000,
    }
}

fn id(n: u128, subscriber: &str) -> DeliveryId {
    DeliveryId {
        event: EventId(n),
        subscriber: subscriber.into(),
    }
}

async fn pending_of(store: &dyn Store, subscriber: &str) -> (u64, u64) {
    store
        .counts()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.route == "muapi" && c.subscriber == subscriber)
        .map_or((0, 0), |c| (c.pending, c.dead))
}

/// How a backend makes a fresh store, and the same store again.
pub trait Backend {
    /// A new, empty store.
    fn fresh(&self) -> impl std::future::Future<Output = Arc<dyn Store>>;
    /// The store `fresh` made, opened again after `close` (same data).
    fn reopen(&self) -> impl std::future::Future<Output = Arc<dyn Store>>;
}

async fn append_is_idempotent_and_claims_its_deliveries(b: &impl Backend) {
    let store = b.fresh().await;
    assert_eq!(
        store.append(event(1, &["a", "b"], T0)).await.unwrap(),
        AppendOutcome::Accepted
    );
    assert_eq!(
        store.append(event(1, &["a", "b"], T0 + 5)).await.unwrap(),
        AppendOutcome::Duplicate
    );
    assert_eq!(pending_of(&*store, "a").await, (1, 0));
    assert_eq!(pending_of(&*store, "b").await, (1, 0));
    // The appender holds the claims: nothing is claimable until released.
    assert!(store
        .claim_due("muapi", "a", T0 + HOUR, 10)
        .await
        .unwrap()
        .is_empty());
    store.release("muapi", "a", &[EventId(1)]).await.unwrap();
    let claimed = store.claim_due("muapi", "a", T0 + HOUR, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, EventId(1));
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].received_ms, T0);
    // Claimed now: a second claim finds nothing.
    assert!(store
        .claim_due("muapi", "a", T0 + HOUR, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.body(EventId(1)).await.unwrap().unwrap(),
        Bytes::from_static(br#"{"id":"task-1","status":"completed"}"#)
    );
    store.close().await;
}

async fn attempts_need_the_claim_and_due_order_is_kept(b: &impl Backend) {
    let store = b.fresh().await;
    for (n, at) in [(1, T0 + 30), (2, T0 + 10), (3, T0 + 20)] {
        store.append(event(n, &["a"], at)).await.unwrap();
    }
    store
        .release("muapi", "a", &[EventId(1), EventId(2), EventId(3)])
        .await
        .unwrap();
    // Only what is due by `until`, earliest first, at most `limit`.
    let claimed = store.claim_due("muapi", "a", T0 + 25, 10).await.unwrap();
    let order: Vec<_> = claimed.iter().map(|c| c.event).collect();
    assert_eq!(order, vec![EventId(2), EventId(3)]);
    // An attempt on a delivery this instance does not hold is stale.
    assert_eq!(
        store
            .record_attempt(update(1, "a", 1, 500, T0 + 40, retry(T0 + 100)))
            .await
            .unwrap(),
        Recorded::Stale
    );
    // A retry that gives the claim up: claimable again when due, with its count.
    assert_eq!(
        store
            .record_attempt(update(2, "a", 1, 500, T0 + 40, retry(T0 + 1000)))
            .await
            .unwrap(),
        Recorded::Applied
    );
    assert_eq!(
        store
            .record_attempt(update(2, "a", 2, 500, T0 + 41, retry(T0 + 2000)))
            .await
            .unwrap(),
        Recorded::Stale,
        "a released claim cannot record"
    );
    let again = store.claim_due("muapi", "a", T0 + 5000, 10).await.unwrap();
    let two = again.iter().find(|c| c.event == EventId(2)).unwrap();
    assert_eq!(two.attempts, 1);
    assert_eq!(two.due_ms, T0 + 1000);
    // A retry that keeps the claim stays ours.
    store
        .record_attempt(AttemptUpdate {
            next: Next::Retry {
                due_ms: T0 + 1500,
                keep_claim: true,
            },
            ..update(2, "a", 2, 503, T0 + 1001, Next::Delivered)
        })
        .await
        .unwrap();
    assert!(store
        .claim_due("muapi", "a", T0 + 5000, 10)
        .await
        .unwrap()
        .iter()
        .all(|c| c.event != EventId(2)));
    assert_eq!(
        store
            .record_attempt(update(2, "a", 3, 200, T0 + 1500, Next::Delivered))
            .await
            .unwrap(),
        Recorded::Applied
    );
    let view = store.event(EventId(2)).await.unwrap().unwrap();
    let d = &view.deliveries[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(d.attempts, 3);
    assert_eq!(
        d.history.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![Some(500), Some(503), Some(200)]
    );
    assert_eq!(view.open, 0);
    // Delivered: nothing to record any more.
    assert_eq!(
        store
            .record_attempt(update(2, "a", 4, 200, T0 + 1600, Next::Delivered))
            .await
            .unwrap(),
        Recorded::Stale
    );
    assert_eq!(pending_of(&*store, "a").await, (2, 0));
    store.close().await;
}

async fn dead_letters_list_replay_and_delete(b: &impl Backend) {
    let store = b.fresh().await;
    for n in 1..=3 {
        store
            .append(event(n, &["a", "b"], T0 + n as u64))
            .await
            .unwrap();
        store
            .record_attempt(update(
                n,
                "a",
                1,
                410,
                T0 + 100 + n as u64,
                dead("410 Gone"),
            ))
            .await
            .unwrap();
        store
            .record_attempt(update(n, "b", 1, 200, T0 + 100, Next::Delivered))
            .await
            .unwrap();
    }
    let all = store
        .dead_letters(DeadLetterQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|d| d.event_id).collect::<Vec<_>>(),
        vec![EventId(3), EventId(2), EventId(1)],
        "newest first"
    );
    assert_eq!(all[0].dead_reason.as_deref(), Some("410 Gone"));
    assert_eq!(all[0].last().unwrap().status, Some(410));
    assert_eq!(all[0].id, format!("{}.a", EventId(3)));
    let none = store
        .dead_letters(DeadLetterQuery {
            subscriber: Some("b".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(pending_of(&*store, "a").await, (0, 3));

    // Replay one by id: pending again, with a fresh schedule, claimable.
    let replayed = store
        .replay(
            DeadSelector::Ids(vec![id(1, "a"), id(1, "a")]),
            T0 + 500,
            100,
        )
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1, "a repeated id is replayed once");
    assert_eq!(replayed[0].state, DeliveryState::Pending);
    assert_eq!(replayed[0].attempts, 0);
    assert_eq!(pending_of(&*store, "a").await, (1, 2));
    let claimed = store.claim_due("muapi", "a", T0 + 500, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].schedule_start_ms, T0 + 500);

    // Replay of one subscriber's dead letters, in bounded batches.
    let first = store
        .replay(
            DeadSelector::Subscriber {
                route: "muapi".into(),
                subscriber: "a".into(),
            },
            T0 + 600,
            1,
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(pending_of(&*store, "a").await, (2, 1));

    // Delete the last one: its own state, not `delivered`.
    let deleted = store
        .delete_dead(
            DeadSelector::Ids(vec![id(3, "a"), id(2, "a")]),
            T0 + 700,
            10,
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].state, DeliveryState::Deleted);
    assert!(store
        .delete_dead(
            DeadSelector::Ids(vec![id(deleted[0].event_id.0, "a")]),
            T0 + 800,
            10
        )
        .await
        .unwrap()
        .is_empty());
    let view = store.event(deleted[0].event_id).await.unwrap().unwrap();
    let a = view
        .deliveries
        .iter()
        .find(|d| d.subscriber == "a")
        .unwrap();
    assert_eq!(a.state, DeliveryState::Deleted);
    assert_eq!(a.dead_reason.as_deref(), Some("410 Gone"));
    assert_eq!(pending_of(&*store, "a").await, (2, 0));
    store.close().await;
}

async fn orphans_are_killed_only_by_an_operator_and_never_while_claimed(b: &impl Backend) {
    let store = b.fresh().await;
    store.append(event(1, &["gone"], T0)).await.unwrap();
    store.append(event(2, &["gone"], T0 + 1)).await.unwrap();
    store.release("muapi", "gone", &[EventId(1)]).await.unwrap();
    // Event 2 is still claimed (by its appender): skipped.
    let killed = store
        .kill_pending("muapi", "gone", "subscriber removed", T0 + 10, 100)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    assert_eq!(pending_of(&*store, "gone").await, (1, 1));
    let letters = store
        .dead_letters(DeadLetterQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(letters[0].event_id, EventId(1));
    assert_eq!(
        letters[0].dead_reason.as_deref(),
        Some("subscriber removed")
    );
    store.close().await;
}

async fn prune_keeps_keys_longer_than_details_and_dead_letters_whole(b: &impl Backend) {
    let store = b.fresh().await;
    // 1: delivered. 2: a dead letter. 3: still pending.
    store.append(event(1, &["a"], T0)).await.unwrap();
    store
        .record_attempt(update(1, "a", 1, 200, T0 + 10, Next::Delivered))
        .await
        .unwrap();
    store.append(event(2, &["a"], T0)).await.unwrap();
    store
        .record_attempt(update(2, "a", 1, 410, T0 + 10, dead("410 Gone")))
        .await
        .unwrap();
    store.append(event(3, &["a"], T0)).await.unwrap();
    // 4: a dead letter nobody touches.
    store.append(event(4, &["a"], T0)).await.unwrap();
    store
        .record_attempt(update(4, "a", 1, 410, T0 + 10, dead("410 Gone")))
        .await
        .unwrap();

    // Within retention nothing goes.
    let r = store.prune(policy(T0 + HOUR)).await.unwrap();
    assert_eq!((r.details, r.keys, r.dead_letters), (0, 0, 0));

    // Past retention: the delivered event loses its details, keeps its key.
    let after_retention = T0 + 25 * HOUR;
    let r = store.prune(policy(after_retention)).await.unwrap();
    assert_eq!(r.details, 1);
    let view = store.event(EventId(1)).await.unwrap().unwrap();
    assert!(view.pruned);
    assert!(view.deliveries.is_empty());
    assert_eq!(view.received_ms, T0);
    assert!(store.body(EventId(1)).await.unwrap().is_none());
    let mut again = event(1, &["a"], after_retention);
    again.ttl_ms = 72 * HOUR;
    assert_eq!(store.append(again).await.unwrap(), AppendOutcome::Duplicate);
    // The dead letter keeps its body past retention, and can be replayed.
    assert!(store.body(EventId(2)).await.unwrap().is_some());
    assert_eq!(
        store
            .replay(DeadSelector::Ids(vec![id(2, "a")]), after_retention, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let replayed = store
        .claim_due("muapi", "a", after_retention, 10)
        .await
        .unwrap();
    assert!(replayed.iter().any(|c| c.event == EventId(2)));
    store
        .record_attempt(update(2, "a", 1, 200, after_retention + 1, Next::Delivered))
        .await
        .unwrap();

    // Past the TTL: the key goes (sweeps may take a few runs) and the id is new again.
    let after_ttl = T0 + 73 * HOUR;
    for _ in 0..300 {
        let r = store.prune(policy(after_ttl)).await.unwrap();
        if r.keys > 0 {
            break;
        }
    }
    assert!(store.event(EventId(1)).await.unwrap().is_none());
    assert_eq!(
        store.append(event(1, &["a"], after_ttl)).await.unwrap(),
        AppendOutcome::Accepted
    );
    // The pending event is never pruned, whatever its age.
    assert!(store.event(EventId(3)).await.unwrap().unwrap().open > 0);
    assert_eq!(
        store.append(event(3, &["a"], after_ttl)).await.unwrap(),
        AppendOutcome::Duplicate,
        "a held event keeps its id"
    );

    // Dead letters past their own retention are deleted, then pruned.
    let after_dl = T0 + 15 * 24 * HOUR;
    let r = store.prune(policy(after_dl)).await.unwrap();
    assert_eq!(r.dead_letters, 1);
    assert_eq!(pending_of(&*store, "a").await.1, 0);
    // Its details went in the same run (and, past the TTL, its key too).
    let view = store.event(EventId(4)).await.unwrap();
    assert!(view.as_ref().is_none_or(|v| v.pruned), "{view:?}");
    assert!(store.body(EventId(4)).await.unwrap().is_none());
    store.close().await;
}

async fn events_are_listed_newest_first_in_pages_and_found_by_source_id(b: &impl Backend) {
    let store = b.fresh().await;
    for n in 1..=5u128 {
        store.append(event(n, &["a"], T0 + n as u64)).await.unwrap();
    }
    let page = store
        .events(EventQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![EventId(5), EventId(4)]
    );
    let next = store
        .events(EventQuery {
            limit: 2,
            before: page.next_before.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![EventId(3), EventId(2)]
    );
    let last = store
        .events(EventQuery {
            limit: 2,
            before: next.next_before.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last.events.len(), 1);
    assert!(last.next_before.is_none());
    let found = store
        .events(EventQuery {
            source_id: Some("task-3".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.events.len(), 1);
    assert_eq!(found.events[0].event_id, EventId(3));
    assert_eq!(found.events[0].status.as_deref(), Some("completed"));
    assert_eq!(found.events[0].deliveries[0].state, DeliveryState::Pending);
    let other_route = store
        .events(EventQuery {
            route: Some("other".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(other_route.events.is_empty());
    store.close().await;
}

async fn everything_survives_a_reopen_and_claims_do_not(b: &impl Backend) {
    let store = b.fresh().await;
    store.append(event(1, &["a", "b"], T0)).await.unwrap();
    store
        .record_attempt(update(1, "b", 1, 410, T0 + 1, dead("410 Gone")))
        .await
        .unwrap();
    store.close().await;
    let store = b.reopen().await;
    assert_eq!(
        store.append(event(1, &["a", "b"], T0 + 2)).await.unwrap(),
        AppendOutcome::Duplicate
    );
    // The claim of the closed instance is gone: the pending delivery is claimable.
    let claimed = store.claim_due("muapi", "a", T0 + 10, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(pending_of(&*store, "b").await, (0, 1));
    assert!(store.body(EventId(1)).await.unwrap().is_some());
    store.close().await;
}

async fn expected_tasks_are_polled_once_and_settled_by_their_final_event(b: &impl Backend) {
    use hookrelay::store::{ExpectedQuery, ExpectedState, NewExpected, PollNext, PollUpdate};
    let store = b.fresh().await;
    let task = |id: &str| NewExpected {
        route: "muapi".into(),
        id: id.into(),
        endpoint: "flux-dev-image".into(),
        submitted_ms: T0,
        first_poll_ms: T0 + 600_000,
    };
    let (t, created) = store.expect(task("req-1")).await.unwrap();
    assert!(created);
    assert_eq!(t.state, ExpectedState::Waiting);
    assert_eq!(t.endpoint, "flux-dev-image");
    let (again, created) = store.expect(task("req-1")).await.unwrap();
    assert!(!created, "expect is idempotent");
    assert_eq!(again.submitted_ms, T0);
    store.expect(task("req-2")).await.unwrap();

    // Nothing is due before reconcile_after.
    assert!(store.claim_polls(T0 + 1000, 10).await.unwrap().is_empty());
    let due = store.claim_polls(T0 + 600_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    // Claimed: nobody else polls them now.
    assert!(store
        .claim_polls(T0 + 600_000, 10)
        .await
        .unwrap()
        .is_empty());
    let update = |id: &str, next: PollNext| PollUpdate {
        route: "muapi".into(),
        id: id.into(),
        result: "processing".into(),
        next,
        now_ms: T0 + 600_001,
    };
    assert_eq!(
        store
            .record_poll(update(
                "req-1",
                PollNext::Again {
                    at_ms: T0 + 630_000
                }
            ))
            .await
            .unwrap(),
        Recorded::Applied
    );
    assert_eq!(
        store
            .record_poll(update(
                "req-1",
                PollNext::Again {
                    at_ms: T0 + 640_000
                }
            ))
            .await
            .unwrap(),
        Recorded::Stale,
        "a poll result needs the claim"
    );
    let polling = store
        .expected(ExpectedQuery {
            state: Some(ExpectedState::Polling),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(polling.len(), 1);
    assert_eq!(polling[0].polls, 1);
    assert_eq!(polling[0].next_poll_ms, T0 + 630_000);
    assert_eq!(polling[0].last_result.as_deref(), Some("processing"));
    // req-2's callback arrives (late): it settles the task in the same commit.
    let mut callback = event(77, &["a"], T0 + 610_000);
    callback.source_id = Some("req-2".into());
    callback.settles = true;
    store.append(callback).await.unwrap();
    assert_eq!(
        store
            .record_poll(update("req-2", PollNext::Expired))
            .await
            .unwrap(),
        Recorded::Stale,
        "a task settled meanwhile is not overwritten"
    );
    let done = store
        .expected(ExpectedQuery {
            state: Some(ExpectedState::Done),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, "req-2");
    assert_eq!(done[0].settled_by, Some(Origin::Callback));
    assert_eq!(done[0].status.as_deref(), Some("completed"));
    // req-1 is polled again when due, and its result fed back.
    let due = store.claim_polls(T0 + 630_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        store
            .record_poll(update(
                "req-1",
                PollNext::Done {
                    status: "completed".into(),
                    via: Origin::Reconciled
                }
            ))
            .await
            .unwrap(),
        Recorded::Applied
    );
    assert!(store
        .claim_polls(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    let mut counts = store.expected_counts().await.unwrap();
    counts.retain(|c| c.2 > 0);
    assert_eq!(counts, vec![("muapi".to_string(), ExpectedState::Done, 2)]);
    // A task registered after its final callback was stored is done at once.
    let mut stored = event(78, &["a"], T0);
    stored.source_id = Some("req-3".into());
    store.append(stored).await.unwrap();
    let (t, created) = store.expect(task("req-3")).await.unwrap();
    assert!(created);
    assert_eq!(t.state, ExpectedState::Done);
    assert_eq!(t.settled_by, Some(Origin::Callback));
    // Closed tasks go with the retention.
    store.prune(policy(T0 + 25 * HOUR)).await.unwrap();
    let left = store
        .expected(ExpectedQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.iter().all(|t| t.state.is_open()), "{left:?}");
    store.close().await;
}

async fn retention_counts_from_the_end_of_the_last_delivery(b: &impl Backend) {
    let store = b.fresh().await;
    // 1: two deliveries, the second ending 20 hours after the first.
    store.append(event(1, &["a", "b"], T0)).await.unwrap();
    store
        .record_attempt(update(1, "a", 1, 200, T0 + 10, Next::Delivered))
        .await
        .unwrap();
    store
        .record_attempt(update(1, "b", 1, 200, T0 + 20 * HOUR, Next::Delivered))
        .await
        .unwrap();
    // 2: a dead letter an operator deletes 10 hours in.
    store.append(event(2, &["a"], T0)).await.unwrap();
    store
        .record_attempt(update(2, "a", 1, 410, T0 + 10, dead("410 Gone")))
        .await
        .unwrap();
    let deleted = store
        .delete_dead(DeadSelector::Ids(vec![id(2, "a")]), T0 + 10 * HOUR, 10)
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(store.event(EventId(2)).await.unwrap().unwrap().open, 0);
    // 3: still pending, and older than both: it must not stop the others.
    store.append(event(3, &["a"], T0 - HOUR)).await.unwrap();
    // 4: no deliveries at all: done when received.
    store.append(event(4, &[], T0)).await.unwrap();

    // 25 h in: only 4 is done for longer than the retention (24 h).
    let r = store.prune(policy(T0 + 25 * HOUR)).await.unwrap();
    assert_eq!(r.details, 1);
    let pruned = |n: u128| {
        let store = store.clone();
        async move { store.event(EventId(n)).await.unwrap().unwrap().pruned }
    };
    assert!(pruned(4).await);
    assert!(!pruned(1).await, "b ended 5 hours ago");
    assert!(!pruned(2).await, "deleted 15 hours ago");
    // 35 h in: the deleted dead letter's event goes; 1 waits for 44 h.
    let r = store.prune(policy(T0 + 35 * HOUR)).await.unwrap();
    assert_eq!(r.details, 1);
    assert!(pruned(2).await);
    assert!(!pruned(1).await);
    let r = store.prune(policy(T0 + 45 * HOUR)).await.unwrap();
    assert_eq!(r.details, 1);
    assert!(pruned(1).await);
    // The pending event keeps everything, and says it is open.
    let view = store.event(EventId(3)).await.unwrap().unwrap();
    assert!(!view.pruned);
    assert_eq!(view.open, 1);
    store.close().await;
}

macro_rules! conformance {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn append_is_idempotent_and_claims_its_deliveries() {
                super::append_is_idempotent_and_claims_its_deliveries(&$backend).await
            }
            #[tokio::test]
            async fn attempts_need_the_claim_and_due_order_is_kept() {
                super::attempts_need_the_claim_and_due_order_is_kept(&$backend).await
            }
            #[tokio::test]
            async fn dead_letters_list_replay_and_delete() {
                super::dead_letters_list_replay_and_delete(&$backend).await
            }
            #[tokio::test]
            async fn orphans_are_killed_only_by_an_operator_and_never_while_claimed() {
                super::orphans_are_killed_only_by_an_operator_and_never_while_claimed(&$backend)
                    .await
            }
            #[tokio::test]
            async fn prune_keeps_keys_longer_than_details_and_dead_letters_whole() {
                super::prune_keeps_keys_longer_than_details_and_dead_letters_whole(&$backend).await
            }
            #[tokio::test]
            async fn events_are_listed_newest_first_in_pages_and_found_by_source_id() {
                super::events_are_listed_newest_first_in_pages_and_found_by_source_id(&$backend)
                    .await
            }
            #[tokio::test]
            async fn expected_tasks_are_polled_once_and_settled_by_their_final_event() {
                super::expected_tasks_are_polled_once_and_settled_by_their_final_event(&$backend)
                    .await
            }
            #[tokio::test]
            async fn retention_counts_from_the_end_of_the_last_delivery() {
                super::retention_counts_from_the_end_of_the_last_delivery(&$backend).await
            }
            #[tokio::test]
            async fn everything_survives_a_reopen_and_claims_do_not() {
                super::everything_survives_a_reopen_and_claims_do_not(&$backend).await
            }
        }
    };
}

/// The embedded store in a temporary directory.
struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for Embedded {
    async fn fresh(&self) -> Arc<dyn Store> {
        self.reopen().await
    }
    async fn reopen(&self) -> Arc<dyn Store> {
        use hookrelay::store::embedded::{EmbeddedOptions, EmbeddedStore};
        Arc::new(EmbeddedStore::open(self.dir.path(), EmbeddedOptions::default()).unwrap())
    }
}

conformance!(embedded, Embedded::new());

#[tokio::test]
async fn embedded_second_open_is_refused_clearly() {
    use hookrelay::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use hookrelay::store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)));
    assert!(err
        .to_string()
        .contains("in use by another hookrelay process"));
}

#[path = "common/pg.rs"]
mod pg;

/// The PostgreSQL store on a schema of the test's own.
struct Postgres {
    schema: pg::TestSchema,
}

impl Postgres {
    fn new() -> Self {
        Self {
            schema: pg::TestSchema::new(),
        }
    }

    fn options(&self) -> hookrelay::store::postgres::PostgresOptions {
        hookrelay::store::postgres::PostgresOptions {
            url: self.schema.url.clone(),
            pool_size: 4,
            schema: self.schema.schema.clone(),
            lease: std::time::Duration::from_secs(30),
            max_batch: 256,
            observer: None,
            ca_certs: Vec::new(),
        }
    }
}

impl Backend for Postgres {
    async fn fresh(&self) -> Arc<dyn Store> {
        self.reopen().await
    }
    async fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(
            hookrelay::store::postgres::PostgresStore::open(self.options())
                .await
                .unwrap(),
        )
    }
}

conformance!(postgres, Postgres::new());

/// A callback and an attempt result the server refuses, in one batch (the
/// writers take waiting results with callbacks): the callback is still
/// accepted, because a batch the server refuses is committed again one
/// kind at a time, and only the result is refused.
#[tokio::test]
async fn postgres_a_result_the_server_refuses_does_not_refuse_the_callback_beside_it() {
    let backend = Postgres::new();
    let store = backend.fresh().await;
    assert_eq!(
        store.append(event(1, &["a"], T0)).await.unwrap(),
        AppendOutcome::Accepted
    );
    // Both are queued in one turn of this (single-threaded) test before the
    // writer runs: it takes them into one batch.
    let (appended, recorded) = tokio::join!(
        store.append(event(2, &["a"], T0)),
        store.record_attempt(update(1, "a", 1, 500, T0 + 1, dead("bad\u{0}reason"))),
    );
    assert_eq!(appended.unwrap(), AppendOutcome::Accepted);
    assert!(recorded.is_err(), "a result with a NUL cannot be stored");
    assert!(store.event(EventId(2)).await.unwrap().is_some());
    assert_eq!(
        store
            .record_attempt(update(1, "a", 1, 200, T0 + 2, Next::Delivered))
            .await
            .unwrap(),
        Recorded::Applied
    );
    store.close().await;
}

/// A batch whose statement fails (here: text PostgreSQL cannot hold, which
/// intake never lets through) commits nothing, answers an error, and leaves
/// no connection of the pool inside a transaction: every later batch, on
/// whichever connection, is written.
#[tokio::test]
async fn postgres_a_failed_batch_commits_nothing_and_spoils_no_connection() {
    let backend = Postgres::new();
    let store = backend.fresh().await;
    let mut bad = event(1, &["a"], T0);
    bad.source_id = Some("task\u{0}1".into());
    assert!(store.append(bad).await.is_err());
    assert!(store.event(EventId(1)).await.unwrap().is_none());
    // More batches than the pool has connections, one after another and
    // then at once.
    for n in 2..=11u128 {
        assert_eq!(
            store.append(event(n, &["a"], T0)).await.unwrap(),
            AppendOutcome::Accepted
        );
    }
    let mut set = tokio::task::JoinSet::new();
    for n in 12..=41u128 {
        let store = store.clone();
        set.spawn(async move { store.append(event(n, &["a"], T0)).await.unwrap() });
    }
    while let Some(outcome) = set.join_next().await {
        assert_eq!(outcome.unwrap(), AppendOutcome::Accepted);
    }
    // The same on the attempts' writer.
    assert!(store
        .record_attempt(update(2, "a", 1, 500, T0 + 1, dead("bad\u{0}reason")))
        .await
        .is_err());
    assert_eq!(
        store
            .record_attempt(update(2, "a", 1, 200, T0 + 2, Next::Delivered))
            .await
            .unwrap(),
        Recorded::Applied
    );
    let view = store.event(EventId(2)).await.unwrap().unwrap();
    assert_eq!(view.open, 0);
    assert_eq!(
        view.deliveries[0].history.len(),
        1,
        "the failed result left nothing"
    );
    assert_eq!(
        pending_of(&*store, "a").await.0,
        39,
        "40 stored, one delivered"
    );
    store.close().await;
}
