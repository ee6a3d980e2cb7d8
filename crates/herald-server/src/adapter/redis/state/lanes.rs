//! Queued ops by app, taken in turns, and in runs of one kind: what the state task applies
//! next.

use std::collections::{HashMap, VecDeque};

use super::OP_BATCH;
use crate::adapter::redis::ops::{Op, Queued};

/// The ops applied in runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    Subscribe,
    Leave,
}

impl Batch {
    pub(super) fn of(op: &Op) -> Option<Batch> {
        match op {
            Op::Subscribe { .. } => Some(Batch::Subscribe),
            Op::Leave { .. } => Some(Batch::Leave),
            _ => None,
        }
    }
}

/// Queued ops by app, taken in turns: one app's flood delays another app's changes by one
/// batch at most, not by the flood's share of the queue. Ops of one app keep their order;
/// ops of different apps touch different keys and hub entries, so their order is free.
#[derive(Default)]
pub(super) struct Lanes {
    by_app: HashMap<String, VecDeque<Queued>>,
    /// Apps with ops waiting, in turn order.
    turns: VecDeque<String>,
    /// The app whose run was taken last, if it has more: it goes back in line only at the
    /// next turn, behind the apps whose first ops arrived while its run was applied.
    last: Option<String>,
    /// The node is leaving, once every lane is empty.
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Lanes {
    pub(super) fn push(&mut self, queued: Queued) {
        let Some(app) = queued.op.app() else {
            if let Op::Stop(done) = queued.into_op() {
                self.stop = Some(done);
            }
            return;
        };
        match self.by_app.get_mut(app.id()) {
            Some(lane) => lane.push_back(queued),
            None => {
                self.turns.push_back(app.id().to_owned());
                self.by_app
                    .insert(app.id().to_owned(), VecDeque::from([queued]));
            }
        }
    }

    /// The next app's next run: up to [`OP_BATCH`] subscriptions or leaves in a row (a
    /// reconnect storm or a mass disconnect is counted in one pipelined round trip
    /// instead of one each), with the count restatements queued among them ([`restates`]:
    /// a closing client queues a leave and its user's and app's counts, a reconnecting one
    /// its user's count and a subscription, so without them a storm's runs would be one
    /// op long); or one other op.
    pub(super) fn next_batch(&mut self) -> Option<Vec<Queued>> {
        if let Some(last) = self.last.take() {
            self.turns.push_back(last);
        }
        let app = self.turns.pop_front()?;
        let lane = self.by_app.get_mut(&app)?;
        let first = lane.pop_front()?;
        let mut kind = Batch::of(&first.op);
        let mut main = usize::from(kind.is_some());
        let mut batch = vec![first];
        if kind.is_some() || restates(&batch[0].op) {
            while batch.len() < RUN_MAX {
                let Some(next) = lane.front() else { break };
                let next_kind = Batch::of(&next.op);
                let joins = if restates(&next.op) {
                    true
                } else if next_kind.is_some() && (kind.is_none() || kind == next_kind) {
                    main < OP_BATCH
                } else {
                    false
                };
                if !joins {
                    break;
                }
                if next_kind.is_some() {
                    kind = next_kind;
                    main += 1;
                }
                batch.extend(lane.pop_front());
            }
        }
        if lane.is_empty() {
            self.by_app.remove(&app);
        } else {
            self.last = Some(app);
        }
        Some(batch)
    }
}

/// Ops in one run at most: [`OP_BATCH`] subscriptions or leaves and the restatements
/// among them.
const RUN_MAX: usize = 4 * OP_BATCH;

/// Ops that restate a count as it is when they are applied (an app's connections, a
/// user's signed-in connections), which no subscription or leave changes: applied after
/// the run they were queued in rather than between its ops, they write the same values,
/// and one of them repeated writes nothing new. They join any run.
pub(super) fn restates(op: &Op) -> bool {
    matches!(op, Op::Connections { .. } | Op::User { .. })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::apps::App;
    use crate::ids::ConnId;
    use crate::outbox::Outbox;
    use crate::settings::Config;

    fn app(id: &str) -> Arc<App> {
        let mut config = Config::default().apps.remove(0);
        config.id = id.to_owned();
        Arc::new(App::new(
            config,
            &crate::webhooks::WebhookSettings::default(),
        ))
    }

    fn subscribe(app: &Arc<App>, conn: ConnId) -> Queued {
        Queued {
            op: Op::Subscribe {
                app: app.clone(),
                channel: format!("c{conn}").into(),
                conn,
                outbox: Arc::new(Outbox::new(1024)),
                cache: false,
                recover: None,
            },
            _held: None,
        }
    }

    fn conns(batch: &[Queued]) -> Vec<ConnId> {
        batch
            .iter()
            .map(|q| match &q.op {
                Op::Subscribe { conn, .. } | Op::Leave { conn, .. } => *conn,
                _ => 0,
            })
            .collect()
    }

    /// Lanes holding 600 subscriptions of `a`: three runs.
    fn lanes_of(a: &Arc<App>) -> Lanes {
        let mut lanes = Lanes::default();
        for conn in 0..600 {
            lanes.push(subscribe(a, conn));
        }
        lanes
    }

    #[test]
    fn apps_take_turns_and_keep_their_own_order() {
        let (a, b) = (app("a"), app("b"));
        let mut lanes = lanes_of(&a);
        lanes.push(subscribe(&b, 1000));
        lanes.push(Queued {
            op: Op::Leave {
                app: b.clone(),
                channel: "c1000".into(),
                conn: 1000,
            },
            _held: None,
        });
        let first = lanes.next_batch().expect("a's first run");
        assert_eq!(conns(&first), (0..256).collect::<Vec<_>>());
        // b waits for one of a's runs, not for all of them; its leave is a run of its own.
        assert_eq!(conns(&lanes.next_batch().expect("b")), [1000]);
        assert_eq!(
            conns(&lanes.next_batch().expect("a's second run")),
            (256..512).collect::<Vec<_>>()
        );
        let leave = lanes.next_batch().expect("b's leave");
        assert!(matches!(leave[0].op, Op::Leave { .. }));
        assert_eq!(conns(&lanes.next_batch().expect("a's rest")).len(), 88);
        assert!(lanes.next_batch().is_none());
        assert!(lanes.by_app.is_empty());
    }

    #[test]
    fn an_app_that_arrives_during_a_run_goes_before_that_apps_next_run() {
        let (a, b) = (app("a"), app("b"));
        let mut lanes = lanes_of(&a);
        assert_eq!(
            conns(&lanes.next_batch().expect("a's first run")).len(),
            256
        );
        // b's first op arrives while a's run is applied, with a's next run still queued.
        lanes.push(subscribe(&b, 1000));
        assert_eq!(conns(&lanes.next_batch().expect("b")), [1000]);
        assert_eq!(
            conns(&lanes.next_batch().expect("a's second run")).len(),
            256
        );
        assert_eq!(conns(&lanes.next_batch().expect("a's rest")).len(), 88);
        assert!(lanes.next_batch().is_none());
    }

    fn leave(app: &Arc<App>, conn: ConnId) -> Queued {
        Queued {
            op: Op::Leave {
                app: app.clone(),
                channel: format!("c{conn}").into(),
                conn,
            },
            _held: None,
        }
    }

    fn kinds(batch: &[Queued]) -> Vec<&'static str> {
        batch
            .iter()
            .map(|q| match q.op {
                Op::Subscribe { .. } => "subscribe",
                Op::Leave { .. } => "leave",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_run_is_one_kind_of_op_in_order() {
        let a = app("a");
        let mut lanes = Lanes::default();
        for queued in [
            subscribe(&a, 1),
            subscribe(&a, 2),
            leave(&a, 1),
            leave(&a, 2),
        ] {
            lanes.push(queued);
        }
        lanes.push(Queued {
            op: Op::Connections { app: a.clone() },
            _held: None,
        });
        lanes.push(Queued {
            op: Op::Connections { app: a.clone() },
            _held: None,
        });
        lanes.push(subscribe(&a, 3));
        let mut runs = Vec::new();
        while let Some(batch) = lanes.next_batch() {
            runs.push((kinds(&batch), conns(&batch)));
        }
        assert_eq!(
            runs,
            [
                (vec!["subscribe", "subscribe"], vec![1, 2]),
                // Count restatements join the run they are queued in.
                (vec!["leave", "leave", "other", "other"], vec![1, 2, 0, 0]),
                (vec!["subscribe"], vec![3]),
            ]
        );
        // A run may start with them; another op stops it and goes alone.
        let mut lanes = Lanes::default();
        for queued in [
            Queued {
                op: Op::Connections { app: a.clone() },
                _held: None,
            },
            leave(&a, 1),
            Queued {
                op: Op::Connections { app: a.clone() },
                _held: None,
            },
            subscribe(&a, 2),
            Queued {
                op: Op::Watchlist {
                    app: a.clone(),
                    outbox: Arc::new(Outbox::new(16)),
                    users: Vec::new(),
                },
                _held: None,
            },
            Queued {
                op: Op::Connections { app: a.clone() },
                _held: None,
            },
        ] {
            lanes.push(queued);
        }
        let mut runs = Vec::new();
        while let Some(batch) = lanes.next_batch() {
            runs.push(kinds(&batch));
        }
        assert_eq!(
            runs,
            [
                vec!["other", "leave", "other"],
                vec!["subscribe"],
                vec!["other"],
                vec!["other"],
            ]
        );
    }

    #[test]
    fn stop_waits_for_every_lane() {
        let a = app("a");
        let mut lanes = Lanes::default();
        let (done, _) = tokio::sync::oneshot::channel();
        lanes.push(Queued {
            op: Op::Stop(done),
            _held: None,
        });
        lanes.push(subscribe(&a, 1));
        assert!(lanes.stop.is_some());
        assert_eq!(conns(&lanes.next_batch().expect("a")), [1]);
        assert!(lanes.next_batch().is_none());
    }
}
