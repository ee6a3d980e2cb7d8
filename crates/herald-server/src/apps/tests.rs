use herald_protocol::close::CloseReason;
use std::sync::Arc;

use super::*;
use crate::app_config::AppConfig;
use crate::outbox::Outbox;
use crate::settings::Config;
use crate::webhooks::WebhookSettings;

fn apps(toml: &str) -> Vec<AppConfig> {
    Config::from_toml(toml, &|_| None).expect("valid").apps
}

fn settings() -> WebhookSettings {
    crate::webhooks::WebhookSettings::default()
}

const ONE_TWO: &str = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                       [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n";

#[test]
fn a_kept_app_keeps_its_state_and_takes_its_new_config() {
    let store = MemoryApps::new(apps(ONE_TWO), &settings());
    let one = store.by_id("1").expect("app 1");
    let outbox = Arc::new(Outbox::new(1 << 16));
    one.hub.subscribe("news", 7, &outbox);
    let changes = store
        .apply(apps(
            "[[apps]]\nid = \"1\"\nkey = \"k1-new\"\nsecret = \"s1-new\"\nmax_connections = 3\n\
             [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
        ))
        .expect("valid");
    assert!(changes.added.is_empty() && changes.removed.is_empty());
    let [(updated, change)] = changes.updated.as_slice() else {
        panic!("one app updated: {changes:?}");
    };
    assert!(Arc::ptr_eq(updated, &one));
    assert_eq!(change.names(), ["key", "secret", "limits"]);
    let now = store.by_key("k1-new").expect("found by its new key");
    assert!(Arc::ptr_eq(&now, &one), "the same App, not a copy");
    assert!(store.by_key("k1").is_none(), "the old key is gone");
    assert_eq!(one.config().secret, "s1-new");
    assert_eq!(one.config().limits.max_connections, 3);
    assert_eq!(one.hub.counts("news").subscription_count, 1, "state kept");
    assert_eq!(one.closed(), None);
    assert!(Arc::ptr_eq(
        &store.by_id("2").expect("app 2"),
        &changes_free_app(&store, "2")
    ));
}

fn changes_free_app(store: &MemoryApps, id: &str) -> Arc<App> {
    store
        .all()
        .into_iter()
        .find(|a| a.id() == id)
        .expect("listed")
}

#[test]
fn apps_are_added_and_removed_and_a_removed_app_says_why_it_closes() {
    let store = MemoryApps::new(apps(ONE_TWO), &settings());
    let two = store.by_id("2").expect("app 2");
    let changes = store
        .apply(apps(
            "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
             [[apps]]\nid = \"3\"\nkey = \"k3\"\nsecret = \"s3\"\n",
        ))
        .expect("valid");
    let ids = |list: &[Arc<App>]| list.iter().map(|a| a.id().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&changes.added), ["3"]);
    assert_eq!(ids(&changes.removed), ["2"]);
    assert!(changes.updated.is_empty(), "app 1 is unchanged");
    assert!(store.by_id("2").is_none() && store.by_key("k2").is_none());
    assert_eq!(
        two.closed(),
        Some((CloseReason::AppDisabled.code(), "Application removed"))
    );
    let three = store.by_key("k3").expect("app 3 by key");
    assert_ne!(three.serial(), two.serial());
    assert_eq!(store.all().len(), 2);

    // The same id added back is a new app: the removed one's connections stay closed.
    store.apply(apps(ONE_TWO)).expect("valid");
    let two_again = store.by_id("2").expect("app 2 again");
    assert!(!Arc::ptr_eq(&two_again, &two));
    assert_eq!(two_again.closed(), None);
    assert!(two.closed().is_some());
}

#[tokio::test]
async fn a_removed_app_goes_with_its_last_connection_and_takes_its_webhooks() {
    let hooked = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                  [[apps.webhooks]]\nurl = \"http://127.0.0.1:9/a\"\n";
    let store = MemoryApps::new(apps(hooked), &settings());
    let slot = store
        .by_key("k1")
        .expect("app 1")
        .try_connect(0)
        .expect("a slot");
    let app = Arc::downgrade(&slot);
    let hooks = Arc::downgrade(&slot.webhooks().expect("a queue"));
    let changes = store
        .apply(apps(
            "[[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
        ))
        .expect("valid");
    assert_eq!(changes.removed.len(), 1);
    drop(changes);
    assert!(app.upgrade().is_some(), "its connection still holds it");
    drop(slot);
    assert!(app.upgrade().is_none(), "gone with its last connection");
    assert!(
        hooks.upgrade().is_none(),
        "and its webhook queue, so the dispatcher ends"
    );
}

#[test]
fn disabling_an_app_keeps_it_and_closes_its_connections() {
    let store = MemoryApps::new(apps(ONE_TWO), &settings());
    let changes = store
        .apply(apps(
            "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\nenabled = false\n\
             [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
        ))
        .expect("valid");
    assert_eq!(changes.updated.len(), 1);
    assert!(changes.updated[0].1.enabled);
    let one = store.by_id("1").expect("still served (HTTP answers 403)");
    assert_eq!(one.closed(), Some((4003, "Application disabled")));
}

#[test]
fn an_invalid_set_changes_nothing_and_names_the_field() {
    let store = MemoryApps::new(apps(ONE_TWO), &settings());
    let mut bad = apps(ONE_TWO);
    bad[1].key = "k1".to_owned();
    bad[0].secret = "changed".to_owned();
    let error = store.apply(bad).expect_err("duplicate key").to_string();
    assert!(error.contains("apps[1].key"), "{error}");
    let one = store.by_id("1").expect("app 1");
    assert_eq!(one.config().secret, "s1", "nothing applied");
    assert!(store.by_key("k2").is_some());
}

#[tokio::test]
async fn changed_endpoints_or_credentials_replace_the_webhook_queue_and_nothing_else_does() {
    let hooked = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                  [[apps.webhooks]]\nurl = \"http://127.0.0.1:9/a\"\n";
    let store = MemoryApps::new(apps(hooked), &settings());
    let one = store.by_id("1").expect("app 1");
    let first = one.webhooks().expect("a queue");
    store
        .apply(apps(&hooked.replace("s1\"", "s1\"\nmax_connections = 5")))
        .expect("valid");
    assert!(Arc::ptr_eq(&one.webhooks().expect("queue"), &first));
    store
        .apply(apps(&hooked.replace("/a", "/b")))
        .expect("valid");
    let second = one.webhooks().expect("a new queue");
    assert!(!Arc::ptr_eq(&second, &first));
    assert!(second.shares_bounds_with(&first), "one bound per app");
    store
        .apply(apps(&hooked.replace("/a", "/b").replace("s1", "s2")))
        .expect("valid");
    assert!(!Arc::ptr_eq(&one.webhooks().expect("queue"), &second));
    store
        .apply(apps(
            "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s2\"\n",
        ))
        .expect("valid");
    assert!(one.webhooks().is_none(), "no endpoints, no queue");
}
