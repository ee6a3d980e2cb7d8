//! The queue's rules, on the memory store and on the disk store in a temporary directory.

use std::time::Duration;

use super::*;

pub(super) fn record(app: &str, body_len: usize) -> Record {
    Record {
        id: 0,
        app_id: app.into(),
        url: "http://127.0.0.1:1/hook".into(),
        key: "key".into(),
        signature: "sig".into(),
        body: "x".repeat(body_len),
        channels: vec!["c".into()],
        created_ms: 1_000,
        attempts: 0,
        next_attempt_ms: 0,
        dead_ms: None,
        last_status: None,
        last_error: None,
        sent_as: None,
        token: None,
    }
}

fn memory(max: usize) -> Queue {
    Queue::open(
        Box::new(MemoryStore::default()),
        max,
        Duration::from_secs(60),
    )
    .unwrap()
}

fn ids(appended: &[Appended]) -> Vec<BatchId> {
    appended
        .iter()
        .filter_map(|a| match a {
            Appended::Stored(id) => Some(*id),
            Appended::Held | Appended::Refused => None,
        })
        .collect()
}

#[test]
fn pending_batches_come_back_in_order_until_acked() {
    let queue = memory(1 << 20);
    let stored = ids(&queue
        .append(&mut [record("a", 10), record("b", 10), record("a", 10)])
        .unwrap());
    assert_eq!(stored.len(), 3);
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "ids grow: {stored:?}"
    );
    let pending = queue.pending("a", 0, 10).unwrap();
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        [stored[0], stored[2]]
    );
    assert_eq!(queue.pending("a", stored[0] + 1, 10).unwrap().len(), 1);
    queue.ack(stored[0]).unwrap();
    assert_eq!(queue.pending("a", 0, 10).unwrap().len(), 1);
    assert_eq!(queue.depth("a").pending, 1);
}

#[test]
fn dead_letters_leave_the_pending_list_and_expire() {
    let queue = memory(1 << 20);
    let id = ids(&queue.append(&mut [record("a", 10)]).unwrap())[0];
    let mut r = queue.pending("a", 0, 1).unwrap().remove(0);
    queue.dead_letter(&mut r, 5_000).unwrap();
    assert!(queue.pending("a", 0, 10).unwrap().is_empty());
    assert_eq!(queue.dead_letters("a").unwrap()[0].id, id);
    assert_eq!(queue.depth("a").dead, 1);
    assert_eq!(queue.expire(5_000 + 59_999).unwrap(), 0);
    assert_eq!(queue.expire(5_000 + 60_000).unwrap(), 1);
    assert_eq!(queue.depth("a"), Depth::default());
}

#[test]
fn the_byte_bound_evicts_the_oldest_dead_letters_then_refuses() {
    let mut sized = record("a", 100);
    sized.id = now_ms() << 12;
    // A dead letter's record, the largest a batch's gets (dead letters are counted at
    // their size as dead letters).
    sized.dead_ms = Some(sized.id);
    let one = sized.encode().len();
    let queue = memory(3 * one);
    let first = ids(&queue
        .append(&mut [record("a", 100), record("a", 100)])
        .unwrap());
    for id in &first {
        let mut r = queue.pending("a", *id, 1).unwrap().remove(0);
        queue.dead_letter(&mut r, *id).unwrap();
    }
    // Another app has its own bound.
    assert_eq!(
        ids(&queue.append(&mut [record("b", 100)]).unwrap()).len(),
        1
    );
    // The first fits; the second only once the oldest dead letter is gone.
    let next = ids(&queue
        .append(&mut [record("a", 100), record("a", 100)])
        .unwrap());
    assert_eq!(next.len(), 2);
    let left: Vec<BatchId> = queue
        .dead_letters("a")
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [first[1]], "the oldest dead letter went first");
    assert_eq!(queue.evicted.load(Ordering::Relaxed), 1);
    // The last dead letter makes room for one more; then, full of pending batches, the
    // next is refused, and counted.
    let more = queue
        .append(&mut [record("a", 100), record("a", 100)])
        .unwrap();
    assert_eq!(more, [Appended::Stored(next[1] + 1), Appended::Refused]);
    assert_eq!(queue.evicted.load(Ordering::Relaxed), 3);
}

#[test]
fn the_disk_store_keeps_batches_across_a_reopen_and_ids_keep_growing() {
    let dir = std::env::temp_dir().join(format!("herald-queue-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || {
        Queue::open(
            Box::new(disk::DiskStore::open(&dir).unwrap()),
            1 << 20,
            Duration::from_secs(60),
        )
        .unwrap()
    };
    let queue = open();
    let stored = ids(&queue
        .append(&mut [record("a", 10), record("a", 20)])
        .unwrap());
    queue.ack(stored[0]).unwrap();
    let mut r = queue.pending("a", 0, 1).unwrap().remove(0);
    r.attempts = 3;
    queue.reschedule(&r).unwrap();
    assert!(
        matches!(disk::DiskStore::open(&dir), Err(StoreError::Locked(_))),
        "a second open is refused while the first holds the lock"
    );
    drop(queue);
    let queue = open();
    let pending = queue.pending("a", 0, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].id, pending[0].attempts), (stored[1], 3));
    assert_eq!(pending[0].body, "x".repeat(20));
    let later = ids(&queue.append(&mut [record("a", 1)]).unwrap());
    assert!(later[0] > stored[1]);
    drop(queue);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn operators_list_retry_and_purge_by_app_endpoint_and_state() {
    let queue = memory(1 << 20);
    let mut other = record("a", 10);
    other.url = "http://127.0.0.1:2/other".into();
    let stored = ids(&queue
        .append(&mut [record("a", 10), record("a", 10), other, record("b", 10)])
        .unwrap());
    for id in [stored[0], stored[2]] {
        let mut r = queue.show(id).unwrap().unwrap();
        queue.dead_letter(&mut r, 5_000).unwrap();
    }
    let app = |state| Filter {
        app_id: "a".into(),
        endpoint: None,
        state,
    };
    let listed = |f: &Filter, after| {
        queue
            .list(f, after, 10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&app(None), None), stored[..3]);
    assert_eq!(
        listed(&app(Some(State::Dead)), None),
        [stored[0], stored[2]]
    );
    assert_eq!(listed(&app(Some(State::Pending)), None), [stored[1]]);
    assert_eq!(listed(&app(None), Some(stored[0])), stored[1..3]);
    assert_eq!(queue.list(&app(None), None, 1).unwrap().len(), 1);
    let one_endpoint = Filter {
        endpoint: Some("http://127.0.0.1:2/other".into()),
        ..app(None)
    };
    assert_eq!(listed(&one_endpoint, None), [stored[2]]);
    assert!(queue.show(stored[0] + 1_000).unwrap().is_none());

    // Only dead letters are retried, with a new retry period and no attempts.
    assert!(queue
        .retry(&app(None), Some(stored[1]), 9_000)
        .unwrap()
        .is_empty());
    assert_eq!(
        queue.retry(&app(None), Some(stored[0]), 9_000).unwrap(),
        [stored[0]]
    );
    let retried = queue.show(stored[0]).unwrap().unwrap();
    assert_eq!(
        (retried.state(), retried.created_ms),
        (State::Pending, 9_000)
    );
    assert_eq!(queue.depth("a").dead, 1);
    assert_eq!(queue.retry(&app(None), None, 9_000).unwrap(), [stored[2]]);
    assert_eq!(queue.depth("a").dead, 0);

    // A purge of dead letters leaves pending batches; naming both removes them, and a
    // delivery's later write does not bring one back.
    let mut r = queue.show(stored[2]).unwrap().unwrap();
    queue.dead_letter(&mut r, 10_000).unwrap();
    assert_eq!(queue.purge(&app(Some(State::Dead))).unwrap(), 1);
    assert_eq!(queue.depth("a").pending, 2);
    let in_flight = queue.show(stored[0]).unwrap().unwrap();
    assert_eq!(queue.purge(&app(None)).unwrap(), 2);
    queue.reschedule(&in_flight).unwrap();
    assert_eq!(queue.depth("a"), Depth::default());
    assert_eq!(queue.depth("b").pending, 1);
}

#[test]
fn a_rewritten_record_keeps_the_byte_count_exact() {
    let queue = memory(1 << 20);
    let id = ids(&queue.append(&mut [record("a", 10)]).unwrap())[0];
    let mut r = queue.show(id).unwrap().unwrap();
    r.last_error = Some("status 500 Internal Server Error".into());
    queue.reschedule(&r).unwrap();
    assert_eq!(queue.depth("a").bytes, r.encode().len() as u64);
}
