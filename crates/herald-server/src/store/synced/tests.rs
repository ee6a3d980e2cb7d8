//! The rules of [`super::StoredApps`] over [`crate::store::MemoryRows`]: changes served
//! within a second, unknown keys looked up once, invalid rows and removed plans that never
//! take an app offline, and a database that goes away and comes back.

use super::*;
use crate::apps::lookup;
use crate::settings::Config;
use crate::store::MemoryRows;

fn row(id: &str, key: &str, settings: &str) -> StoredApp {
    StoredApp::test_row(id, key, settings)
}

struct Running {
    stored: Arc<StoredApps>,
    memory: Arc<MemoryApps>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(rows: &Arc<MemoryRows>) -> Running {
    let memory = Arc::new(MemoryApps::new(
        Vec::new(),
        &crate::webhooks::WebhookSettings::default(),
    ));
    let stored = StoredApps::new(Arc::new(rows.clone()), memory.clone(), Plans::default());
    stored.load_first(Duration::from_secs(1)).await;
    let target = memory.clone();
    let apply: Apply = Box::new(move |apps| {
        let changes = target.apply(apps)?;
        let ids = |list: &[Arc<App>]| list.iter().map(|a| a.id().to_owned()).collect();
        Ok(Reloaded {
            added: ids(&changes.added),
            removed: ids(&changes.removed),
            ..Reloaded::default()
        })
    });
    let stop = CancellationToken::new();
    tokio::spawn(stored.clone().run(apply, stop.clone()));
    Running {
        stored,
        memory,
        stop,
    }
}

async fn eventually(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn rows_added_changed_and_removed_are_served_within_a_second() {
    let rows = Arc::new(MemoryRows::default());
    rows.insert(&row("1", "k1", "{}")).await.expect("insert");
    let node = start(&rows).await;
    assert!(node.memory.by_key("k1").is_some(), "loaded before serving");
    assert_eq!(node.stored.unavailable(), None);

    rows.insert(&row("2", "k2", "{}")).await.expect("insert");
    eventually("a new app", Duration::from_secs(1), || {
        node.memory.by_key("k2").is_some()
    })
    .await;
    let mut two = row("2", "k2", r#"{"max_connections":3}"#);
    two.enabled = false;
    rows.update(&two).await.expect("update");
    eventually("a changed app", Duration::from_secs(1), || {
        node.memory
            .by_id("2")
            .is_some_and(|a| !a.config().enabled && a.config().limits.max_connections == 3)
    })
    .await;
    rows.remove("1").await.expect("remove");
    eventually("a removed app", Duration::from_secs(1), || {
        node.memory.by_id("1").is_none()
    })
    .await;
}

#[tokio::test]
async fn an_unknown_key_reaches_the_database_once_and_a_new_row_is_served_on_its_first_lookup() {
    let rows = Arc::new(MemoryRows::default());
    let node = start(&rows).await;
    for _ in 0..50 {
        assert!(lookup(&*node.stored, AppRef::Key("nope")).await.is_none());
    }
    assert_eq!(rows.finds(), 1, "the miss is remembered");
    rows.insert(&row("3", "k3", "{}")).await.expect("insert");
    // Before the change is applied: the lookup finds the row and waits for it.
    let found = lookup(&*node.stored, AppRef::Key("k3")).await;
    assert_eq!(found.map(|a| a.id().to_owned()).as_deref(), Some("3"));
}

#[tokio::test]
async fn an_invalid_row_is_skipped_and_the_others_are_served() {
    let rows = Arc::new(MemoryRows::default());
    rows.insert(&row("1", "k1", r#"{"max_events_per_batch":0}"#))
        .await
        .expect("insert");
    rows.insert(&row("2", "k2", r#"{"no_such_setting":1}"#))
        .await
        .expect("insert");
    rows.insert(&row("3", "k3", "{}")).await.expect("insert");
    let node = start(&rows).await;
    assert!(node.memory.by_id("1").is_none() && node.memory.by_id("2").is_none());
    assert!(node.memory.by_id("3").is_some());
    assert_eq!(
        node.stored.invalid.counts(),
        (0, 2),
        "never valid: not served"
    );
    rows.update(&row("1", "k1", "{}")).await.expect("fix it");
    eventually("the fixed app", Duration::from_secs(1), || {
        node.memory.by_id("1").is_some()
    })
    .await;
    assert_eq!(node.stored.invalid.counts(), (0, 1));
}

#[tokio::test]
async fn while_the_database_is_away_the_known_apps_are_served() {
    let rows = Arc::new(MemoryRows::default());
    rows.insert(&row("1", "k1", "{}")).await.expect("insert");
    rows.set_down(true);
    let node = start(&rows).await;
    assert!(
        node.stored.unavailable().is_some(),
        "not ready before the first load"
    );
    rows.set_down(false);
    eventually("the first load", Duration::from_secs(2), || {
        node.stored.unavailable().is_none()
    })
    .await;
    assert!(node.memory.by_key("k1").is_some());

    rows.set_down(true);
    eventually("the outage seen", Duration::from_secs(1), || {
        node.stored.down.load(Ordering::SeqCst)
    })
    .await;
    assert!(!node.stored.reading().up);
    eventually(
        "the outage's length counted",
        Duration::from_secs(1),
        || node.stored.reading().stale >= Duration::from_millis(100),
    )
    .await;
    assert!(node.memory.by_key("k1").is_some(), "still served");
    assert_eq!(node.stored.unavailable(), None, "ready: it has loaded");
    let finds = rows.finds();
    assert!(lookup(&*node.stored, AppRef::Key("other")).await.is_none());
    assert_eq!(rows.finds(), finds, "no lookups while it is away");

    rows.set_down(false);
    rows.insert(&row("2", "k2", "{}")).await.expect("insert");
    eventually("changes after the outage", Duration::from_secs(6), || {
        node.memory.by_key("k2").is_some()
    })
    .await;
    assert!(!node.stored.down.load(Ordering::SeqCst));
    let reading = node.stored.reading();
    assert!(reading.up && reading.stale.is_zero(), "{reading:?}");
}

/// `row` with a plan.
fn on_plan(id: &str, key: &str, plan: &str) -> StoredApp {
    let mut app = row(id, key, "{}");
    app.plan = Some(plan.into());
    app
}

#[tokio::test]
async fn a_row_turned_invalid_keeps_its_last_good_version_and_its_connections_until_fixed() {
    let rows = Arc::new(MemoryRows::default());
    rows.insert(&row("1", "k1", r#"{"max_connections":5}"#))
        .await
        .expect("insert");
    rows.insert(&row("2", "k2", "{}")).await.expect("insert");
    let node = start(&rows).await;
    let served = node.memory.by_key("k1").expect("app 1 served");
    let slot = served.try_connect(0).expect("a connection slot");

    // A typo in the settings, then a change to app 2: once that one is served, the
    // reload that read the typo has been applied.
    rows.update(&row("1", "k1", r#"{"max_conections":9}"#))
        .await
        .expect("update");
    rows.update(&row("2", "k2", r#"{"max_connections":3}"#))
        .await
        .expect("update");
    eventually("app 2's change", Duration::from_secs(1), || {
        node.memory
            .by_id("2")
            .is_some_and(|a| a.config().limits.max_connections == 3)
    })
    .await;
    let still = node.memory.by_key("k1").expect("app 1 still served");
    assert!(Arc::ptr_eq(&still, &served), "the same app, its state kept");
    assert_eq!(slot.closed(), None, "its connection is not closed");
    assert_eq!(
        still.config().limits.max_connections,
        5,
        "its last good config"
    );
    assert!(lookup(&*node.stored, AppRef::Id("1")).await.is_some());
    let (reason, kept) = node.stored.invalid.reason("1").expect("reported invalid");
    assert!(kept && reason.contains("`max_conections`"), "{reason}");
    assert_eq!(node.stored.reading().invalid_kept, 1);

    // Fixed: applied as any change is.
    rows.update(&row("1", "k1", r#"{"max_connections":9}"#))
        .await
        .expect("fix");
    eventually("the fixed row", Duration::from_secs(1), || {
        served.config().limits.max_connections == 9
    })
    .await;
    assert!(Arc::ptr_eq(
        &node.memory.by_id("1").expect("app 1"),
        &served
    ));
    assert_eq!(slot.closed(), None);
    assert_eq!(node.stored.invalid.counts(), (0, 0));
}

#[tokio::test]
async fn an_invalid_row_still_takes_a_rotated_secret_a_disable_and_a_removal() {
    let rows = Arc::new(MemoryRows::default());
    rows.insert(&row("1", "k1", "{}")).await.expect("insert");
    let node = start(&rows).await;
    let served = node.memory.by_key("k1").expect("app 1 served");
    let slot = served.try_connect(0).expect("a connection slot");

    let mut bad = row("1", "k1", r#"{"max_conections":9}"#);
    bad.secret = "rotated".into();
    rows.update(&bad).await.expect("update");
    eventually("the rotated secret", Duration::from_secs(1), || {
        served.config().secret == "rotated"
    })
    .await;
    assert_eq!(slot.closed(), None);
    assert_eq!(node.stored.invalid.counts(), (1, 0));

    bad.enabled = false;
    rows.update(&bad).await.expect("update");
    eventually("the app disabled", Duration::from_secs(1), || {
        slot.closed().is_some()
    })
    .await;
    assert!(Arc::ptr_eq(&node.memory.by_id("1").expect("kept"), &served));

    rows.remove("1").await.expect("remove");
    eventually("the app removed", Duration::from_secs(1), || {
        node.memory.by_id("1").is_none()
    })
    .await;
    assert_eq!(node.stored.invalid.counts(), (0, 0));
}

#[tokio::test]
async fn a_plan_removed_by_a_reload_closes_nothing_and_its_apps_keep_their_limits() {
    let rows = Arc::new(MemoryRows::default());
    rows.insert(&on_plan("1", "k1", "pro"))
        .await
        .expect("insert");
    rows.insert(&on_plan("2", "k2", "basic"))
        .await
        .expect("insert");
    let config = |toml: &str| Config::from_toml(toml, &|_| None).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let (ready, started) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(crate::serve_with_rows(
        listener,
        config("[plans.pro]\nmax_connections = 5\n[plans.basic]\nmax_connections = 2\n"),
        Arc::new(rows.clone()),
        stop.clone().cancelled_owned(),
        move |started| {
            let _ = ready.send(started);
        },
    ));
    let started: crate::Started = started.await.expect("ready");
    let memory = started.reloader.memory().clone();
    let one = memory.by_id("1").expect("app 1 served");
    let slot = one.try_connect(0).expect("a connection slot");
    assert_eq!(one.config().limits.max_connections, 5);

    // `pro` renamed: app 2's new plan limit shows the reload has been applied.
    let reloaded = started
        .reloader
        .apply(config(
            "[plans.professional]\nmax_connections = 5\n[plans.basic]\nmax_connections = 3\n",
        ))
        .expect("applied");
    assert_eq!(reloaded.closed, 0);
    let limit = |id: &str| memory.by_id(id).map(|a| a.config().limits.max_connections);
    eventually("the reloaded plans", Duration::from_secs(2), || {
        limit("2") == Some(3)
    })
    .await;
    let still = memory.by_id("1").expect("app 1 still served");
    assert!(Arc::ptr_eq(&still, &one), "not removed and added again");
    assert_eq!(slot.closed(), None, "no socket closed");
    assert_eq!(limit("1"), Some(5), "its last good limits");

    // The plan back, with a new limit: applied.
    started
        .reloader
        .apply(config(
            "[plans.pro]\nmax_connections = 7\n[plans.basic]\nmax_connections = 3\n",
        ))
        .expect("applied");
    eventually("the plan back", Duration::from_secs(2), || {
        limit("1") == Some(7)
    })
    .await;
    assert_eq!(slot.closed(), None);
    drop(slot);
    stop.cancel();
    server.await.expect("task").expect("served");
}
