//! Which version of each row a node serves, and the rows that are not valid apps.
//!
//! A valid row is served as it is. A row that is not a valid app (a typo in its settings,
//! a value of the wrong type, a plan the config file no longer has) never takes its app
//! offline: the node goes on serving the last valid version it served, and only the
//! columns that are valid on their own are taken from the row (`enabled`, so a disable
//! still closes the app's sockets; the secret, so a rotation after a leak still refuses
//! the old one). A row with no valid version yet is not served. Each distinct bad state
//! of a row is logged once and counted, and the row is reported until it is fixed.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoredApp;
use crate::app_config::fields::validate_app;
use crate::app_config::fields::Plans;
use crate::app_config::AppConfig;

/// A row that is not a valid app now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    pub(super) id: String,
    /// Why, naming the field.
    pub(super) reason: String,
    /// Whether its last valid version is served (else the app is not served at all).
    pub(super) kept: bool,
    /// The row's content and the reason, hashed: a new one is a new bad state.
    state: u64,
}

/// The apps to serve for a set of rows, and the rows that are not valid apps.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    pub(super) configs: Vec<AppConfig>,
    pub(super) invalid: Vec<Invalid>,
    /// The rows served as they are.
    valid: HashSet<String>,
}

enum Version {
    /// The row itself.
    Row(AppConfig),
    /// The last valid version, the row's own valid columns taken over it.
    LastGood(AppConfig, String),
    /// Nothing: the row was never valid.
    None(String),
}

/// What to serve for `rows` under `plans`; `last_good` gives the version of an app the node
/// serves now, if it serves one.
pub(super) fn resolve(
    rows: Vec<StoredApp>,
    plans: &Plans,
    last_good: impl Fn(&str) -> Option<AppConfig>,
) -> Resolved {
    let fall_back = |row: &StoredApp, reason: String| match last_good(&row.id) {
        Some(good) => Version::LastGood(over(good, row, plans), reason),
        None => Version::None(reason),
    };
    let mut versions: Vec<(StoredApp, Version)> = rows
        .into_iter()
        .map(|row| {
            let version = match row.check(plans) {
                Ok(config) => Version::Row(config),
                Err(reason) => fall_back(&row, reason),
            };
            (row, version)
        })
        .collect();
    // A kept version holds its old key; a valid row that took that key meanwhile waits
    // (as an invalid row) until the kept one is fixed or gone, so that what is served
    // never has two apps on one key. Each pass turns at least one row, so this ends.
    loop {
        let kept: HashMap<&str, &str> = versions
            .iter()
            .filter_map(|(row, v)| match v {
                Version::LastGood(config, _) => Some((config.key.as_str(), row.id.as_str())),
                _ => None,
            })
            .collect();
        let clash = versions.iter().position(|(row, v)| match v {
            Version::Row(config) => kept
                .get(config.key.as_str())
                .is_some_and(|owner| *owner != row.id),
            _ => false,
        });
        let Some(i) = clash else { break };
        let owner = kept[versions[i].0.key.as_str()].to_owned();
        let reason =
            format!("`key` is the key app '{owner}' is still served with (its row is not valid)");
        versions[i].1 = fall_back(&versions[i].0, reason);
    }
    let mut resolved = Resolved::default();
    for (row, version) in versions {
        match version {
            Version::Row(config) => {
                resolved.valid.insert(row.id);
                resolved.configs.push(config);
            }
            Version::LastGood(config, reason) => {
                resolved.invalid.push(Invalid::new(&row, reason, true));
                resolved.configs.push(config);
            }
            Version::None(reason) => resolved.invalid.push(Invalid::new(&row, reason, false)),
        }
    }
    resolved
}

/// `good` with the row's columns that are valid on their own (`enabled`, and the secret),
/// its webhooks under the networks `plans` allows now: a network the operator no longer
/// allows is refused at delivery, even to a version kept from before.
fn over(good: AppConfig, row: &StoredApp, plans: &Plans) -> AppConfig {
    let mut app = AppConfig {
        enabled: row.enabled,
        ..good
    };
    for hook in &mut app.webhooks {
        hook.reach = plans.tenant_reach();
    }
    if app.secret != row.secret {
        let rotated = AppConfig {
            secret: row.secret.clone(),
            ..app.clone()
        };
        if validate_app("", &rotated).is_ok() {
            app = rotated;
        }
    }
    app
}

impl Invalid {
    fn new(row: &StoredApp, reason: String, kept: bool) -> Invalid {
        let mut hasher = DefaultHasher::new();
        (&row.id, &row.key, &row.secret, row.enabled, &row.plan).hash(&mut hasher);
        row.settings_json().hash(&mut hasher);
        reason.hash(&mut hasher);
        Invalid {
            id: row.id.clone(),
            reason,
            kept,
            state: hasher.finish(),
        }
    }
}

/// The rows that are not valid apps now, as the last load found them.
#[derive(Debug, Default)]
pub(super) struct InvalidRows {
    now: parking_lot::Mutex<HashMap<String, Invalid>>,
    /// Distinct bad states seen since start.
    seen: AtomicU64,
}

impl InvalidRows {
    /// Takes the outcome of a load: logs each bad state not seen before, and each row that
    /// was invalid and is valid again.
    pub(super) fn record(&self, resolved: &Resolved) {
        let mut now = self.now.lock();
        let mut next = HashMap::with_capacity(resolved.invalid.len());
        for row in &resolved.invalid {
            if now.get(&row.id).is_none_or(|was| was.state != row.state) {
                self.seen.fetch_add(1, Ordering::Relaxed);
                if row.kept {
                    tracing::warn!(app_id = %row.id, reason = %row.reason, "An app in the database is not valid: its last valid version is served until the row is fixed");
                } else {
                    tracing::warn!(app_id = %row.id, reason = %row.reason, "An app in the database is not valid: it is not served");
                }
            }
            next.insert(row.id.clone(), row.clone());
        }
        for id in now.keys() {
            if resolved.valid.contains(id) {
                tracing::info!(app_id = %id, "An app in the database is valid again");
            }
        }
        *now = next;
    }

    /// Rows invalid now: those whose last valid version is served, and those not served.
    pub(super) fn counts(&self) -> (u64, u64) {
        let now = self.now.lock();
        let kept = now.values().filter(|r| r.kept).count() as u64;
        (kept, now.len() as u64 - kept)
    }

    /// Distinct bad states seen since the node started (each logged once).
    pub(super) fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Why row `id` is not valid now, if it is not.
    #[cfg(test)]
    pub(super) fn reason(&self, id: &str) -> Option<(String, bool)> {
        self.now.lock().get(id).map(|r| (r.reason.clone(), r.kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: &str, settings: &str) -> StoredApp {
        StoredApp::test_row(id, key, settings)
    }

    fn served(rows: Vec<StoredApp>, last: &[AppConfig]) -> Resolved {
        resolve(rows, &Plans::default(), |id| {
            last.iter().find(|a| a.id == id).cloned()
        })
    }

    #[test]
    fn an_invalid_row_takes_only_its_valid_columns_over_its_last_valid_version() {
        let good = served(vec![row("1", "k1", r#"{"max_connections":5}"#)], &[]).configs;
        let mut bad = row("1", "k1-new", r#"{"max_conections":9}"#);
        bad.secret = "rotated".into();
        bad.enabled = false;
        let now = served(vec![bad.clone()], &good);
        let [app] = &now.configs[..] else {
            panic!("one app: {:?}", now.configs)
        };
        assert_eq!(app.limits.max_connections, 5, "its last valid settings");
        assert_eq!(app.key, "k1", "its key waits for a valid row");
        assert_eq!((app.secret.as_str(), app.enabled), ("rotated", false));
        assert_eq!(now.invalid.len(), 1);
        assert!(now.invalid[0].kept);
        assert!(now.invalid[0].reason.contains("`max_conections`"));

        // An empty secret is not taken; a row never valid is not served.
        bad.secret = String::new();
        let now = served(vec![bad, row("2", "k2", "[]")], &good);
        assert_eq!(now.configs.len(), 1);
        assert_eq!(now.configs[0].secret, "s1");
        assert!(!now.invalid[1].kept);
    }

    #[test]
    fn a_network_no_longer_allowed_is_refused_to_the_kept_version_too() {
        let plans = |networks: &[&str]| {
            let networks = networks.iter().map(|n| (*n).to_owned()).collect();
            let networks =
                crate::config::error::parse_networks("webhook_allowed_networks", networks)
                    .expect("valid");
            Plans::from_file(HashMap::new(), networks)
        };
        let hook = r#"{"webhooks":[{"url":"http://10.0.0.5/h"}]}"#;
        let wide = plans(&["10.0.0.0/8"]);
        let good = resolve(vec![row("1", "k1", hook)], &wide, |_| None).configs;
        assert_eq!(good.len(), 1, "allowed");
        // The operator narrows the list: the row is not valid any more, its last valid
        // version is kept (sockets stay), and its webhook may reach public addresses only.
        let narrow = plans(&["192.168.0.0/16"]);
        let now = resolve(vec![row("1", "k1", hook)], &narrow, |id| {
            good.iter().find(|a| a.id == id).cloned()
        });
        assert!(now.invalid[0].kept, "{:?}", now.invalid);
        assert!(
            now.invalid[0].reason.contains("private"),
            "{:?}",
            now.invalid
        );
        let kept = &now.configs[0].webhooks[0];
        assert_eq!(kept.reach, narrow.tenant_reach());
        let address = "10.0.0.5".parse().expect("ip");
        assert!(kept.reach.check(address).is_err(), "refused at delivery");
    }

    #[test]
    fn a_valid_row_on_the_key_a_kept_version_holds_waits_for_it() {
        let last = served(vec![row("1", "k1", "{}"), row("2", "k2", "{}")], &[]).configs;
        // App 1 moved to a new key with a typo; app 2 took its old key; app 3 took 2's.
        let rows = vec![
            row("1", "k1-new", r#"{"typo":1}"#),
            row("2", "k1", "{}"),
            row("3", "k2", "{}"),
        ];
        let now = served(rows, &last);
        let keys: Vec<(&str, &str)> = now
            .configs
            .iter()
            .map(|a| (a.id.as_str(), a.key.as_str()))
            .collect();
        assert_eq!(keys, [("1", "k1"), ("2", "k2")], "3 waits for 2");
        assert_eq!(now.invalid.len(), 3);
        assert!(
            now.invalid[1].reason.contains("app '1'"),
            "{:?}",
            now.invalid
        );
        assert!(!now.invalid[2].kept);
    }

    #[test]
    fn each_bad_state_is_counted_once() {
        let rows = InvalidRows::default();
        let last = served(vec![row("1", "k1", "{}")], &[]).configs;
        let bad = |settings| served(vec![row("1", "k1", settings)], &last);
        rows.record(&bad(r#"{"typo":1}"#));
        rows.record(&bad(r#"{"typo":1}"#));
        assert_eq!((rows.counts(), rows.seen()), ((1, 0), 1));
        rows.record(&bad(r#"{"typo":2}"#));
        assert_eq!(rows.seen(), 2, "another bad state of the row");
        rows.record(&bad("{}"));
        assert_eq!((rows.counts(), rows.seen()), ((0, 0), 2));
    }
}
