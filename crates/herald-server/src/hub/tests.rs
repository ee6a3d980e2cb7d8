use super::*;
use std::collections::VecDeque;

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(1 << 20))
}

fn drain(o: &Outbox) -> Vec<String> {
    let mut frames = VecDeque::new();
    o.take(&mut frames);
    frames
        .iter()
        .map(|f| {
            // Server frames: 2-byte header for payloads under 126 bytes, 4 bytes above;
            // tests also publish raw bytes, which are returned whole.
            let skip = match f.get(1) {
                Some(126) => 4,
                Some(_) if f[0] == 0x81 => 2,
                _ => 0,
            };
            String::from_utf8_lossy(&f[skip..]).into_owned()
        })
        .collect()
}

fn member(id: &str) -> Member {
    herald_protocol::presence::parse_member(&format!("{{\"user_id\":\"{id}\"}}"))
        .expect("valid member")
}

fn here(max_members: usize) -> Roster<'static> {
    Roster::Here { max_members }
}

#[test]
fn publish_skips_the_excluded_connection() {
    let hub = Hub::new();
    let (a, b) = (outbox(), outbox());
    assert!(hub.subscribe("c", 1, &a).occupied());
    assert!(!hub.subscribe("c", 2, &b).occupied());
    assert!(hub.subscribe("c", 2, &b).already());
    drain(&a);
    drain(&b);
    assert_eq!(hub.publish("c", &Bytes::from_static(b"x"), Some(1)), 1);
    assert!(drain(&a).is_empty());
    assert_eq!(drain(&b).len(), 1);
    assert_eq!(hub.unsubscribe("c", 1).map(|l| l.remaining), Some(1));
    assert_eq!(hub.unsubscribe("c", 2).map(|l| l.remaining), Some(0));
    assert!(hub.channels("").is_empty());
}

#[test]
fn one_compressed_frame_is_shared_by_every_compressed_subscriber() {
    let hub = Hub::new();
    let deflate = || Arc::new(Outbox::for_app(1 << 20, 0, Some(256)));
    let (a, b, plain) = (deflate(), deflate(), outbox());
    for (conn, o) in [(1, &a), (2, &b), (3, &plain)] {
        hub.subscribe("c", conn, o);
        drain(o);
    }
    let event = format!(
        r#"{{"event":"e","channel":"c","data":"{}"}}"#,
        "tick ".repeat(100)
    );
    let frame = text_frame(&event);
    assert_eq!(hub.publish("c", &frame, None), 3);
    let take = |o: &Outbox| {
        let mut frames = VecDeque::new();
        o.take(&mut frames);
        assert_eq!(frames.len(), 1);
        frames.pop_front().expect("one frame")
    };
    let (fa, fb, fp) = (take(&a), take(&b), take(&plain));
    assert_eq!(fa[0], 0xC1, "compressed: RSV1 set");
    assert!(fa.len() < frame.len() / 4);
    // The same allocation, not an equal copy: compressed once for both.
    assert_eq!(fa.as_ptr(), fb.as_ptr());
    assert_eq!(
        fp.as_ptr(),
        frame.as_ptr(),
        "the plain subscriber shares the plain frame"
    );
    // Frames under the threshold, and frames for one socket, follow the same rule.
    assert_eq!(hub.publish("c", &text_frame("{}"), None), 3);
    assert_eq!(take(&a)[0], 0x81);
    drain(&plain);
    assert!(a.push(frame.clone()));
    assert_eq!(take(&a)[0], 0xC1);
    assert!(plain.push(frame.clone()));
    assert_eq!(take(&plain).as_ptr(), frame.as_ptr());
    drain(&b);
}

#[test]
fn presence_member_events_fire_on_first_and_last_connection() {
    let hub = Hub::new();
    let (a1, a2, b) = (outbox(), outbox(), outbox());
    hub.join_presence("presence-r", 1, &b, &member("b"), here(100))
        .expect("joined");
    hub.join_presence("presence-r", 2, &a1, &member("a"), here(100))
        .expect("joined");
    hub.join_presence("presence-r", 3, &a2, &member("a"), here(100))
        .expect("joined");
    let seen_by_b = drain(&b);
    let added: Vec<_> = seen_by_b
        .iter()
        .filter(|f| f.contains("member_added"))
        .collect();
    assert_eq!(added.len(), 1, "{seen_by_b:?}");
    assert_eq!(hub.counts("presence-r").user_count, 2);
    assert_eq!(hub.counts("presence-r").subscription_count, 3);
    assert_eq!(
        hub.unsubscribe("presence-r", 2)
            .and_then(|l| l.member_removed),
        None
    );
    assert_eq!(
        hub.unsubscribe("presence-r", 3)
            .and_then(|l| l.member_removed)
            .as_deref(),
        Some("a")
    );
    assert!(drain(&b).iter().any(|f| f.contains("member_removed")));
    assert_eq!(hub.users("presence-r"), ["b"]);
}

#[test]
fn presence_limit_counts_distinct_users() {
    let hub = Hub::new();
    let o = outbox();
    hub.join_presence("presence-x", 1, &o, &member("a"), here(1))
        .expect("first user fits");
    hub.join_presence("presence-x", 2, &o, &member("a"), here(1))
        .expect("same user again fits");
    assert_eq!(
        hub.join_presence("presence-x", 3, &o, &member("b"), here(1)),
        Err(PresenceRefused::Full { max: 1 })
    );
}

/// R8 (issue 26): a repeated presence subscribe is answered with the frame made for
/// the list's current version, not a list rebuilt and recompressed under the lock.
#[test]
fn a_repeated_presence_subscribe_resends_the_frame_made_for_the_lists_version() {
    let hub = Hub::new();
    let deflate = || Arc::new(Outbox::for_app(1 << 20, 0, Some(256)));
    let one = |o: &Outbox| {
        let mut frames = VecDeque::new();
        o.take(&mut frames);
        assert_eq!(frames.len(), 1);
        frames.pop_front().expect("one frame")
    };
    let (a, b) = (deflate(), deflate());
    let info = |id: &str| Member {
        user_id: id.to_owned(),
        user_info: Some(format!(r#"{{"bio":"{}"}}"#, id.repeat(300))),
    };
    hub.join_presence("presence-r", 1, &a, &info("ann"), here(100))
        .expect("joined");
    one(&a);
    hub.join_presence("presence-r", 2, &b, &info("bob"), here(100))
        .expect("joined");
    let first = one(&b);
    one(&a); // member_added
    assert_eq!(first[0], 0xC1, "compressed");
    // Repeats, from either connection: the very same bytes, compressed once.
    for (conn, o) in [(2, &b), (1, &a), (2, &b)] {
        hub.join_presence("presence-r", conn, o, &info("x"), here(100))
            .expect("re-confirmed");
        assert_eq!(one(o).as_ptr(), first.as_ptr());
    }
    // A new member is a new version of the list; a member leaving is another.
    let c = deflate();
    hub.join_presence("presence-r", 3, &c, &info("cy"), here(100))
        .expect("joined");
    let with_cy = one(&c);
    assert_ne!(with_cy.as_ptr(), first.as_ptr());
    drain(&a);
    hub.join_presence("presence-r", 1, &a, &info("ann"), here(100))
        .expect("re-confirmed");
    assert_eq!(one(&a).as_ptr(), with_cy.as_ptr());
    hub.unsubscribe("presence-r", 3);
    drain(&a);
    hub.join_presence("presence-r", 1, &a, &info("ann"), here(100))
        .expect("re-confirmed");
    let without_cy = one(&a);
    assert_ne!(without_cy.as_ptr(), with_cy.as_ptr());
    assert_eq!(without_cy, first, "the same list as before cy came");
}

#[test]
fn live_events_a_recovering_join_replayed_are_skipped_for_it_only() {
    let hub = Hub::new();
    let (old, new) = (outbox(), outbox());
    hub.subscribe("c", 1, &old);
    // The replay queued serials up to 5; the bus has brought only up to 3 here so far.
    let mut joining = |o: &Outbox| {
        o.push(Bytes::from_static(b"replayed 4-5"));
        5
    };
    hub.subscribe_joining("c", 2, &new, Some(&mut joining));
    drain(&old);
    let publish = |serial: u64| {
        let frame = Bytes::from(format!("event {serial}"));
        hub.publish_serial("c", &frame, None, serial, || {})
    };
    assert_eq!(publish(4), 1);
    assert_eq!(publish(5), 1);
    assert_eq!(publish(6), 2);
    assert_eq!(drain(&old), ["event 4", "event 5", "event 6"]);
    let got = drain(&new);
    assert_eq!(got[1..], ["replayed 4-5", "event 6"], "{got:?}");
    // Past the replay the channel keeps no skip: a later join starts clean.
    assert_eq!(
        publish(5),
        2,
        "no skip is left once a later serial went out"
    );
}
