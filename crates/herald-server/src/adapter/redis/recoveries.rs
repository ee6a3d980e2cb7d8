//! A cluster's recovery entries (the seam is [`crate::recovery`]), kept in Redis so that a
//! client coming back on any node gets what its last connection left, wherever that was.
//!
//! - `{P:app}:rc:{identity}`: a string, the window's end in Unix ms and then a line
//!   `<serial> <channel>` per channel, with a TTL of the entry's keep time (the window
//!   plus the time a late client is still told it came too late). Written with `SET PX`
//!   (one command per entry left); taken with a script that reads and deletes it, so that
//!   two nodes never both take it (one command per identified connection).
//!
//! Whether a channel is awaited is asked on every subscribe of a connection with no
//! identity yet, so it must not cost a round trip: each node keeps an index of the entries
//! kept in the cluster, in memory (a [`crate::recovery::memory::MemoryRecoveries`], told over the bus as entries are
//! kept and taken: [`RecoveryNotice`]), and answers from it. A notice lost with the bus
//! costs at worst a wrong hint: a short wait, or a subscription answered before its
//! connection's sign-in took the entry (its client is then told nothing was missed).
//!
//! Takeover across nodes: a connection of an identity that goes silent (a ping unanswered
//! for 2 s) leaves its entry without waiting to close (`ws/recovery.rs`), so a new
//! connection on another node finds it; the new connection also sends a takeover notice,
//! on which every node closes its silent connections of that identity: the user's
//! signed-in ones, and a presence member's connections on the channel the new one joins.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;

use super::Cluster;
use crate::adapter::bus::{BusMessage, RecoveryNotice};
use crate::apps::App;
use crate::clock;
use crate::recovery::{Recoveries, Remembered};

/// How long a take waits for Redis before the connection goes on without recovery.
const TAKE_WAIT: Duration = Duration::from_secs(1);

/// Reads and deletes an entry in one step (`GETDEL` needs Redis 6.2). KEYS: the entry.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
",
    )
});

/// The recoveries of a cluster node (see the module's text).
pub(crate) struct Shared(pub(crate) Arc<Cluster>);

/// An entry as Redis keeps it.
fn encode(entry: &Remembered) -> String {
    let mut out = entry.until_ms.to_string();
    for (channel, serial) in &entry.channels {
        out.push('\n');
        out.push_str(&serial.to_string());
        out.push(' ');
        out.push_str(channel);
    }
    out
}

/// An entry read back; `None` if it is not one.
fn decode(text: &str) -> Option<Remembered> {
    let mut lines = text.split('\n');
    let until_ms = lines.next()?.parse().ok()?;
    let mut channels = Vec::new();
    for line in lines {
        let (serial, channel) = line.split_once(' ')?;
        channels.push((channel.to_owned(), serial.parse().ok()?));
    }
    Some(Remembered { until_ms, channels })
}

impl Recoveries for Shared {
    fn remember(&self, app: &str, identity: &str, entry: Remembered, keep: Duration) {
        let cluster = &self.0;
        cluster.awaited.remember_at(
            app,
            identity,
            entry.clone(),
            keep,
            tokio::time::Instant::now(),
        );
        if !cluster.redis_up() {
            return;
        }
        let key = cluster.keys.recovery(app, identity);
        let notice = BusMessage::Recovery {
            app: app.to_owned(),
            identity: identity.to_owned(),
            notice: RecoveryNotice::Kept {
                channels: entry.channels.iter().map(|(c, _)| c.clone()).collect(),
                keep_ms: keep.as_millis() as u64,
            },
        };
        let cluster = cluster.clone();
        let writing = cluster.writing.clone();
        writing.spawn(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key)
                .arg(encode(&entry))
                .arg("PX")
                .arg(keep.as_millis().max(1) as u64);
            match cmd.query_async::<()>(&mut cluster.redis()).await {
                // Told once it is there, so a node that hears it can take it.
                Ok(()) => cluster.send(&notice),
                Err(error) => cluster.request_failed("a recovery entry; not kept", &error),
            }
        });
    }

    fn take(&self, app: &str, identity: &str) -> BoxFuture<'static, Option<Remembered>> {
        let cluster = self.0.clone();
        let (app, identity) = (app.to_owned(), identity.to_owned());
        Box::pin(async move {
            if !cluster.redis_up() {
                return None;
            }
            let mut invocation = TAKE.prepare_invoke();
            invocation.key(cluster.keys.recovery(&app, &identity));
            let mut redis = cluster.redis();
            let asked = invocation.invoke_async::<Option<String>>(&mut redis);
            let text = match tokio::time::timeout(TAKE_WAIT, asked).await {
                Ok(Ok(text)) => text?,
                Ok(Err(error)) => {
                    cluster.request_failed("a recovery entry; not recovered", &error);
                    return None;
                }
                Err(_) => return None,
            };
            let now = tokio::time::Instant::now();
            cluster.awaited.take_at(&app, &identity, now);
            cluster.send(&BusMessage::Recovery {
                app,
                identity,
                notice: RecoveryNotice::Taken,
            });
            decode(&text)
        })
    }

    fn awaited(&self, app: &str, channel: &str) -> bool {
        self.0.awaited.awaited(app, channel)
    }

    fn take_over(&self, app: &str, identity: &str, presence: Option<&str>) {
        self.0.send(&BusMessage::Recovery {
            app: app.to_owned(),
            identity: identity.to_owned(),
            notice: RecoveryNotice::TakeOver {
                presence: presence.map(str::to_owned),
            },
        });
    }
}

impl Cluster {
    /// Another node's notice about a recovery entry of `identity`.
    pub(super) fn recovery_heard(&self, app: &App, identity: &str, notice: RecoveryNotice) {
        let now = tokio::time::Instant::now();
        match notice {
            RecoveryNotice::Kept { channels, keep_ms } => {
                // The index needs the channels only: the entry itself is Redis's.
                let entry = Remembered {
                    until_ms: 0,
                    channels: channels.into_iter().map(|c| (c, 0)).collect(),
                };
                let keep = Duration::from_millis(keep_ms);
                self.awaited
                    .remember_at(app.id(), identity, entry, keep, now);
            }
            RecoveryNotice::Taken => {
                self.awaited.take_at(app.id(), identity, now);
            }
            RecoveryNotice::TakeOver { presence } => {
                let now = clock::now();
                let mut others = app.users.connections(identity);
                if let Some(channel) = presence {
                    others.extend(app.hub.member_outboxes(&channel, identity));
                }
                for other in others {
                    if crate::ws::silent(&other, now) {
                        let r = herald_protocol::close::CloseReason::PongNotReceived;
                        other.close(r.code(), r.message());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a real `redis-server` (`redis-fixture`): two nodes of one cluster, driven by
    //! hand (no bus runs: what a node tells the others stays in its bus queue).

    use redis::AsyncCommands;
    use redis_fixture::RedisServer;

    use super::*;
    use crate::adapter::redis::RedisConfig;
    use crate::outbox::Outbox;

    fn entry(channels: &[(&str, u64)]) -> Remembered {
        Remembered {
            until_ms: 1_700_000_000_000,
            channels: channels
                .iter()
                .map(|(c, s)| ((*c).to_owned(), *s))
                .collect(),
        }
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let entry = entry(&[("feed", 7), ("private-a;b", 0)]);
        assert_eq!(decode(&encode(&entry)), Some(entry));
        assert_eq!(decode("x\n1 feed"), None);
    }

    async fn node(redis: &RedisServer, id: u32) -> Shared {
        let config = RedisConfig {
            url: redis.url(),
            prefix: "herald".into(),
            node_timeout: Duration::from_secs(2),
            ops_per_app: 1000,
            bus_max_bytes: 1 << 20,
            ..RedisConfig::default()
        };
        Shared(Cluster::connect(&config, Some(id)).await.expect("connect"))
    }

    #[tokio::test]
    async fn an_entry_left_on_one_node_is_taken_once_on_another_and_expires() {
        let redis = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .expect("redis");
        let (a, b) = (node(&redis, 1).await, node(&redis, 2).await);
        let mut look = redis::Client::open(redis.url())
            .expect("a client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let key = a.0.keys.recovery("1", "ana");
        let keep = Duration::from_secs(30);
        a.remember("1", "ana", entry(&[("feed", 7), ("news", 3)]), keep);
        assert!(
            a.awaited("1", "feed"),
            "the node that left it knows at once"
        );
        assert!(
            !b.awaited("1", "feed"),
            "another node, once told by the bus"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let ttl: i64 = look.pttl(&key).await.expect("PTTL");
            if ttl > 0 {
                assert!(ttl <= 30_000, "kept for the keep time: {ttl}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the entry is written"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Two nodes take at once: one gets it.
        let (x, y) = tokio::join!(b.take("1", "ana"), a.take("1", "ana"));
        let got: Vec<_> = [x, y].into_iter().flatten().collect();
        assert_eq!(got, vec![entry(&[("feed", 7), ("news", 3)])]);
        let left: Option<String> = look.get(&key).await.expect("GET");
        assert_eq!(left, None);

        // Another node's notice makes its channels awaited, and a taken one not.
        let notice = RecoveryNotice::Kept {
            channels: vec!["feed".into()],
            keep_ms: 30_000,
        };
        let mut app = crate::Config::default().apps.remove(0);
        app.id = "1".into();
        let apps =
            crate::apps::MemoryApps::new([app], &crate::webhooks::WebhookSettings::default());
        let app = crate::apps::AppStore::by_id(&apps, "1").expect("the app");
        b.0.recovery_heard(&app, "bo", notice);
        assert!(b.awaited("1", "feed"));
        b.0.recovery_heard(&app, "bo", RecoveryNotice::Taken);
        assert!(!b.awaited("1", "feed"));

        // The node that takes an entry awaits its channels no more.
        a.remember("1", "dee", entry(&[("dees", 2)]), keep);
        let mut taken = None;
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while taken.is_none() && tokio::time::Instant::now() < until {
            taken = a.take("1", "dee").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(taken, Some(entry(&[("dees", 2)])));
        assert!(!a.awaited("1", "dees"));

        // A takeover notice closes the identity's silent connections on the node that
        // hears it (a ping unanswered for 3 s), not its live ones.
        let (silent, live) = (
            Arc::new(Outbox::new(1 << 16)),
            Arc::new(Outbox::new(1 << 16)),
        );
        let user: Arc<str> = Arc::from("bo");
        app.users.add(&user, 1, &silent);
        app.users.add(&user, 2, &live);
        let three_seconds_ago = clock::now().wrapping_sub(clock::ticks(Duration::from_secs(3)));
        silent
            .timers
            .ping_sent
            .store(three_seconds_ago, std::sync::atomic::Ordering::Relaxed);
        b.0.recovery_heard(&app, "bo", RecoveryNotice::TakeOver { presence: None });
        assert_eq!(silent.close_code(), Some(4201));
        assert_eq!(live.close_code(), None);

        // A presence member that never signed in: closed when the notice names its channel.
        let member =
            herald_protocol::presence::parse_member(r#"{"user_id":"pat"}"#).expect("valid member");
        let quiet = Arc::new(Outbox::new(1 << 16));
        quiet
            .timers
            .ping_sent
            .store(three_seconds_ago, std::sync::atomic::Ordering::Relaxed);
        let roster = crate::hub::Roster::Here { max_members: 100 };
        app.hub
            .join_presence("presence-room", 3, &quiet, &member, roster)
            .expect("joined");
        b.0.recovery_heard(&app, "pat", RecoveryNotice::TakeOver { presence: None });
        assert_eq!(
            quiet.close_code(),
            None,
            "no channel named, no member found"
        );
        let notice = RecoveryNotice::TakeOver {
            presence: Some("presence-room".into()),
        };
        b.0.recovery_heard(&app, "pat", notice);
        assert_eq!(quiet.close_code(), Some(4201));

        // An entry kept for a moment is gone after it.
        a.remember("1", "cy", entry(&[("feed", 1)]), Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.take("1", "cy").await, None);
    }
}
