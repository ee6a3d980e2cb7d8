//! A recovering subscription's join on a cluster node: the events its connection missed
//! are read from the channel's history in Redis (`history.rs`) and queued before any live
//! one, with none lost or sent twice between the two.
//!
//! The read comes after the node's bus subscription of the channel is confirmed, so every
//! event after the last one read (serial N) reaches this node on the bus. The node notes
//! the serial of each event it delivers, under the channel's lock (`transport.rs`): L.
//! - L > N: events were delivered here between the read and the join; they are read too,
//!   a few times at most, before the join.
//! - L < N: events the read saw have not come on the bus yet; when they do, the hub skips
//!   them for this connection (`Hub::publish_serial`).
//!
//! If the join finds L > N after all (an event came in the moment between the last read
//! and the lock), what came between cannot be queued under the lock: the channel gets
//! `herald:recovery_failed` with `history_gap`, and the application refetches.

use bytes::Bytes;

use super::StateTask;
use crate::apps::App;
use crate::outbox::Outbox;
use crate::recovery::{failed_frame, Plan, Recover};

/// How many reads a join makes at most while events keep coming in between.
const READS: usize = 4;

/// What a recovering join queues, read before it.
pub(super) struct Prepared {
    /// The missed events, oldest first, with their serials.
    frames: Vec<Bytes>,
    /// The serial of the last event read (the replayed-from serial if none was).
    through: u64,
    /// Why the missed events cannot be replayed, if they cannot.
    failed: Option<&'static str>,
}

/// The serial this node last delivered on `channel`, read once no delivery is half done.
fn delivered(app: &App, channel: &str) -> u64 {
    app.hub.quiet(channel, || app.history.last_serial(channel))
}

impl StateTask {
    /// Reads what a recovering subscription replays (see the module's text).
    pub(super) async fn prepare(
        &mut self,
        app: &App,
        channel: &str,
        recover: &Recover,
    ) -> Prepared {
        let after = match recover.plan {
            Plan::Fresh => {
                return Prepared {
                    frames: Vec::new(),
                    through: 0,
                    failed: None,
                }
            }
            Plan::Failed(reason) => {
                return Prepared {
                    frames: Vec::new(),
                    through: 0,
                    failed: Some(reason),
                }
            }
            Plan::Replay(after) => after,
        };
        let mut prepared = Prepared {
            frames: Vec::new(),
            through: after,
            failed: None,
        };
        let limit = app.config().history.max_events;
        for read in 0..READS {
            let got = self
                .cluster
                .frames_after(app, channel, prepared.through, limit)
                .await;
            let (newest, frames) = match got {
                Ok(got) => got,
                Err(error) => {
                    self.failed(&error);
                    prepared.failed = Some("history_gap");
                    return prepared;
                }
            };
            // The first read must start right after what the client confirmed.
            let first = frames.first().map(|(serial, _)| *serial);
            let evicted = match first {
                Some(first) => first > prepared.through + 1,
                None => newest > prepared.through,
            };
            if read == 0 && evicted {
                prepared.failed = Some("history_gap");
                return prepared;
            }
            for (serial, frame) in frames {
                prepared.through = serial;
                prepared.frames.push(frame);
            }
            if delivered(app, channel) <= prepared.through {
                break;
            }
        }
        prepared
    }
}

/// Under the channel's lock as the connection joins: queues what `prepared` holds and
/// says which serial the connection joined through; returns the serial through which
/// live events are skipped for it.
pub(super) fn join(
    app: &App,
    channel: &str,
    recover: &Recover,
    prepared: &mut Prepared,
    outbox: &Outbox,
) -> u64 {
    // Under the lock: a serial noted is a serial every subscriber was sent.
    let here = app.history.last_serial(channel);
    if let Some(reason) = prepared.failed {
        outbox.push(failed_frame(channel, reason));
        recover.joined(here);
        return 0;
    }
    if recover.plan == Plan::Fresh {
        recover.joined(here);
        return 0;
    }
    for frame in prepared.frames.drain(..) {
        outbox.push(frame);
    }
    if here > prepared.through {
        outbox.push(failed_frame(channel, "history_gap"));
        recover.joined(here);
        return 0;
    }
    recover.joined(prepared.through);
    prepared.through
}
