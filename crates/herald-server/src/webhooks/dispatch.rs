//! One task per app: it batches events (up to [`BATCH_SIZE`] or [`BATCH_WINDOW`], Pusher's
//! limits), holds `channel_vacated` back, signs each endpoint's body, writes it to the
//! queue (off the runtime's threads: publishing never waits on it) and then starts its
//! delivery in turn. Batches the queue holds but no delivery does (after a restart, or
//! past memory's bounds) are handed over in id order on a tick ([`RESUME_EVERY`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::webhook::{webhook_body, webhook_signature, WebhookEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bounds::Bounds;
use super::deliver::{deliver, Delivery};
use super::holdback::HeldBack;
use super::store::{now_ms, Appended, BatchId, Record, State};
use super::{order, reach};

/// Events per batch (Pusher's limit).
const BATCH_SIZE: usize = 20;
/// How long a batch may wait for more events (Pusher's window).
const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// How often batches waiting in the queue are looked for, and dead letters expired.
const RESUME_EVERY: Duration = Duration::from_secs(1);
/// Batches read back from the queue at a time.
const RESUME_AT_MOST: usize = 64;
/// Full batches written at most in one durable write (group commit).
const GROUP: usize = 32;

/// Whether full batches waiting together are written together; off only to measure what
/// that gains (`measure.rs`).
#[cfg(not(test))]
fn grouping() -> bool {
    true
}
#[cfg(test)]
pub(super) static UNGROUPED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
#[cfg(test)]
fn grouping() -> bool {
    !UNGROUPED.load(std::sync::atomic::Ordering::Relaxed)
}

pub(super) struct Dispatcher {
    pub(super) app_id: String,
    pub(super) key: String,
    pub(super) secret: String,
    pub(super) endpoints: Vec<reach::Endpoint>,
    pub(super) vacated_delay: Duration,
    pub(super) bounds: Arc<Bounds>,
    pub(super) order: order::Order,
    /// Batches claimed from a dead node of a cluster, not handed over yet (memory's
    /// bounds).
    pub(super) claimed: VecDeque<Record>,
    /// Batches the node kept aside while its cluster's queue could not take them, moved
    /// there since and not handed over yet (memory's bounds): batches written after them
    /// wait in the queue meanwhile.
    pub(super) moved: VecDeque<Record>,
}

impl Dispatcher {
    pub(super) async fn run(mut self, mut events: mpsc::Receiver<WebhookEvent>) {
        let mut batch: Vec<WebhookEvent> = Vec::new();
        let mut batch_deadline: Option<Instant> = None;
        let mut held = HeldBack::default();
        let now_token = self.bounds.flush.now.clone();
        let last_token = self.bounds.flush.last.clone();
        let mut resume_at = Instant::now();
        loop {
            let flushing = now_token.is_cancelled();
            let now = Instant::now();
            if now >= resume_at {
                self.resume().await;
                resume_at = now + RESUME_EVERY;
            }
            let wake = [batch_deadline, held.next_due(), Some(resume_at)]
                .into_iter()
                .flatten()
                .min();
            let waiting = self.bounds.waiting_from.lock().is_some()
                || !self.moved.is_empty()
                || !self.claimed.is_empty();
            let bounds = self.bounds.clone();
            let woke = tokio::select! {
                biased;
                () = last_token.cancelled() => Woke::Last,
                // A delivery ended: the batches waiting in the queue may go now.
                () = bounds.freed.notified(), if waiting => {
                    resume_at = Instant::now();
                    Woke::Tick
                }
                // An operator retried dead letters: they go now.
                () = bounds.retry.notified() => {
                    resume_at = Instant::now();
                    Woke::Tick
                }
                // The drain started: no client can come back here, so nothing is held back.
                () = now_token.cancelled(), if !flushing => Woke::Tick,
                event = events.recv() => Woke::Event(event),
                () = sleep_until_some(wake) => Woke::Tick,
            };
            let grew = match woke {
                Woke::Event(Some(event)) => self.take(event, &mut batch, &mut held, flushing),
                Woke::Tick => false,
                // Every sender is gone: the app is gone; send what is left and stop.
                Woke::Event(None) => return self.send_rest(batch, &mut held).await,
                // The node has left: what is queued and held goes out, and nothing more is
                // taken (a late event is dropped and counted by `emit`).
                Woke::Last => {
                    events.close();
                    while let Some(event) = events.recv().await {
                        self.take(event, &mut batch, &mut held, true);
                    }
                    return self.send_rest(batch, &mut held).await;
                }
            };
            if grew {
                batch_deadline.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
            }
            let now = Instant::now();
            let due = if now_token.is_cancelled() {
                held.drain().collect()
            } else {
                held.take_due(now)
            };
            for channel in due {
                batch.push(WebhookEvent::ChannelVacated { channel });
                batch_deadline = Some(now);
            }
            let due = batch_deadline.is_some_and(|d| d <= now);
            if batch.len() >= BATCH_SIZE || due {
                if !due && grouping() {
                    // Group commit: the events already waiting (they came in while the
                    // last write was made durable) fill more batches, written with this
                    // one in one durable write. Nothing is waited for: a lone batch goes
                    // as it did.
                    while batch.len() < GROUP * BATCH_SIZE {
                        let Ok(event) = events.try_recv() else { break };
                        self.take(event, &mut batch, &mut held, flushing);
                    }
                }
                // Whole batches go; a last partial one waits out its own window.
                let whole = if due {
                    batch.len()
                } else {
                    batch.len() / BATCH_SIZE * BATCH_SIZE
                };
                let rest = batch.split_off(whole);
                batch_deadline = (!rest.is_empty()).then(|| now + BATCH_WINDOW);
                self.send_all(std::mem::replace(&mut batch, rest)).await;
            }
        }
    }

    /// Takes one event: a `channel_vacated` is held back (unless `flushing`), a
    /// `channel_occupied` within the hold-back cancels it, and the rest join `batch`.
    /// Returns whether the batch grew.
    fn take(
        &self,
        event: WebhookEvent,
        batch: &mut Vec<WebhookEvent>,
        held: &mut HeldBack,
        flushing: bool,
    ) -> bool {
        match event {
            WebhookEvent::ChannelVacated { channel } if !flushing => {
                held.hold(channel, Instant::now() + self.vacated_delay);
                false
            }
            WebhookEvent::ChannelOccupied { channel } if held.release(&channel) => {
                // Vacated and occupied again within the hold-back: neither is reported.
                false
            }
            event => {
                batch.push(event);
                true
            }
        }
    }

    /// Sends `batch` and then every held-back `channel_vacated`: the dispatcher stops.
    async fn send_rest(&mut self, mut batch: Vec<WebhookEvent>, held: &mut HeldBack) {
        batch.extend(
            held.drain()
                .map(|channel| WebhookEvent::ChannelVacated { channel }),
        );
        self.send_all(batch).await;
    }

    /// Sends `events` in batches of at most [`BATCH_SIZE`], in order: each endpoint's
    /// body is written to the queue (one durable write for them all), then delivered.
    async fn send_all(&mut self, events: Vec<WebhookEvent>) {
        let time_ms = now_ms();
        let mut records: Vec<Record> = Vec::new();
        for chunk in events.chunks(BATCH_SIZE) {
            for endpoint in &self.endpoints {
                let accepted: Vec<&WebhookEvent> = chunk
                    .iter()
                    .filter(|e| endpoint.config.accepts(e))
                    .collect();
                if accepted.is_empty() {
                    continue;
                }
                let body = webhook_body(time_ms, &accepted);
                records.push(Record {
                    id: 0,
                    app_id: self.app_id.clone(),
                    url: endpoint.config.url.clone(),
                    key: self.key.clone(),
                    signature: webhook_signature(&self.secret, body.as_bytes()),
                    body,
                    channels: accepted.iter().map(|e| e.channel().to_owned()).collect(),
                    created_ms: time_ms,
                    attempts: 0,
                    next_attempt_ms: 0,
                    dead_ms: None,
                    last_status: None,
                    last_error: None,
                    sent_as: None,
                    token: None,
                });
            }
        }
        if records.is_empty() {
            return;
        }
        let count = records.len() as u64;
        let written = self
            .bounds
            .queue
            .run(move |q| (q.append(&mut records), records))
            .await;
        let Some((Ok(outcome), records)) = written else {
            if let Some((Err(error), _)) = written {
                tracing::error!(app_id = %self.app_id, %error, "Webhook batches could not be written to the queue: dropped");
            }
            self.bounds.dropped(count);
            return;
        };
        for (appended, record) in outcome.into_iter().zip(records) {
            match appended {
                Appended::Stored(_) => {
                    self.hand(record, false);
                }
                // Kept aside by the node: handed over once in the cluster's queue.
                Appended::Held => {}
                Appended::Refused => {
                    self.bounds.dropped(1);
                    if let Some(suppressed) = self.bounds.log.should_log() {
                        tracing::warn!(
                            app_id = %self.app_id,
                            suppressed,
                            "Webhook batch dropped: the app's queue holds webhook_max_stored_bytes of pending batches"
                        );
                    }
                }
            }
        }
    }

    /// Starts the delivery of a batch the queue holds, unless earlier batches of the app
    /// still wait there (it waits behind them) or memory's bounds are reached (it starts
    /// waiting). `resuming`: it is the first one waiting. Returns whether it was handed
    /// over.
    fn hand(&mut self, record: Record, resuming: bool) -> bool {
        let bounds = self.bounds.clone();
        let mut waiting = bounds.waiting_from.lock();
        if waiting.is_some() && !resuming {
            return false;
        }
        if !self.moved.is_empty() && !resuming {
            // Behind batches written before it and not handed over yet: it waits in the
            // queue until they are.
            *waiting = Some(record.id);
            return false;
        }
        match self.start(record, false) {
            Ok(()) => true,
            Err(id) => {
                *waiting = Some(id);
                false
            }
        }
    }

    /// Starts the delivery of `record`, or gives back its id when memory's bounds are
    /// reached. `claimed`: taken over from a dead node of a cluster, so older than every
    /// batch this node holds on its channels (`Order::claimed`).
    fn start(&mut self, record: Record, claimed: bool) -> Result<(), BatchId> {
        let Some(place) = self.place(&record) else {
            return Ok(());
        };
        let Some(reserved) = self.bounds.reserve(record.body.len(), &self.app_id) else {
            return Err(record.id);
        };
        let channels = record.channels.iter().map(String::as_str);
        let turn = if claimed {
            self.order.claimed(place, channels)
        } else {
            self.order.next(place, channels)
        };
        let endpoint = &self.endpoints[place];
        self.bounds.flush.tasks.spawn(deliver(
            Delivery {
                client: endpoint.client.clone(),
                url: endpoint.config.url.clone(),
                host: endpoint.host.clone(),
                refused: endpoint.refused.clone(),
            },
            record,
            reserved,
            turn,
        ));
        Ok(())
    }

    /// The place of the batch's endpoint in the app's list; a batch for an endpoint the
    /// app no longer has becomes a dead letter (nobody is waiting for it).
    fn place(&self, record: &Record) -> Option<usize> {
        let place = self
            .endpoints
            .iter()
            .position(|e| e.config.url == record.url);
        if place.is_none() {
            tracing::warn!(app_id = %self.app_id, id = record.id, "Webhook batch for an endpoint no longer configured: dead letter");
            let queue = self.bounds.queue.clone();
            let mut record = record.clone();
            tokio::spawn(async move {
                queue
                    .run(move |q| q.dead_letter(&mut record, now_ms()))
                    .await
            });
        }
        place
    }

    /// Hands over the batches claimed from a dead node of a cluster (none on a single
    /// node), as far as memory's bounds let; the rest wait for the next tick.
    async fn hand_claimed(&mut self) {
        if self.claimed.is_empty() {
            let app_id = self.app_id.clone();
            match self
                .bounds
                .queue
                .run(move |q| q.claim(&app_id, RESUME_AT_MOST))
                .await
            {
                Some(Ok(records)) => self.claimed.extend(records),
                Some(Err(error)) => {
                    tracing::error!(app_id = %self.app_id, %error, "Webhook queue: the batches of dead nodes could not be claimed");
                }
                None => {}
            }
        }
        let mut claimed = std::mem::take(&mut self.claimed);
        self.start_each(&mut claimed, true);
        self.claimed = claimed;
    }

    /// Starts `records` in order until memory's bounds stop one, which stays first in
    /// `records` for the next tick; returns whether all started. Claimed and moved batches
    /// are rare, so each is cloned to be given back.
    fn start_each(&mut self, records: &mut VecDeque<Record>, claimed: bool) -> bool {
        while let Some(record) = records.pop_front() {
            if self.start(record.clone(), claimed).is_err() {
                records.push_front(record);
                return false;
            }
        }
        true
    }

    /// Hands over the batches waiting in the queue, in id order, as far as memory's
    /// bounds let; expires old dead letters.
    async fn resume(&mut self) {
        self.resume_retried().await;
        // Page after page, while memory's bounds let the batches through; those kept
        // aside first, as they were written first.
        if self.hand_held().await {
            while self.resume_page().await {}
        }
        self.hand_claimed().await;
    }

    /// Hands over, in order, the batches the node kept aside while its cluster's queue
    /// could not take them, once moved there (none on a single node), as far as memory's
    /// bounds let. Returns whether none is left to hand over.
    async fn hand_held(&mut self) -> bool {
        loop {
            let mut moved = std::mem::take(&mut self.moved);
            let all = self.start_each(&mut moved, false);
            self.moved = moved;
            if !all {
                return false;
            }
            let app_id = self.app_id.clone();
            match self
                .bounds
                .queue
                .run(move |q| q.take_held(&app_id, RESUME_AT_MOST))
                .await
            {
                Some(Ok(records)) if !records.is_empty() => self.moved.extend(records),
                Some(Ok(_)) | None => return true,
                Some(Err(error)) => {
                    tracing::error!(app_id = %self.app_id, %error, "Webhook queue: the batches kept aside could not be read");
                    return true;
                }
            }
        }
    }

    /// Hands over the dead letters an operator retried, as far as memory's bounds let;
    /// the rest stay for the next tick or the next delivery's end.
    async fn resume_retried(&mut self) {
        if self.bounds.retried.is_locked() || self.bounds.retried.lock().is_empty() {
            // Being written to (its `retry` notifies when done), or nothing to do.
            return;
        }
        let bounds = self.bounds.clone();
        let read = self
            .bounds
            .queue
            .run(move |q| {
                std::mem::take(&mut *bounds.retried.lock())
                    .into_iter()
                    .filter_map(|id| q.show(id).transpose())
                    .collect::<Result<Vec<Record>, _>>()
            })
            .await;
        let records = match read {
            Some(Ok(records)) => records,
            Some(Err(error)) => {
                tracing::error!(app_id = %self.app_id, %error, "Webhook queue could not be read");
                return;
            }
            None => return,
        };
        let mut records = records.into_iter();
        for record in records.by_ref() {
            // Purged again, or already handed over: nothing to do.
            if record.state() != State::Pending {
                continue;
            }
            if let Err(id) = self.start(record, false) {
                let mut retried = self.bounds.retried.lock();
                retried.insert(id);
                retried.extend(records.map(|r| r.id));
                return;
            }
        }
    }

    /// Hands over one page of the batches waiting; returns whether more may wait.
    async fn resume_page(&mut self) -> bool {
        let Some(from) = *self.bounds.waiting_from.lock() else {
            return false;
        };
        let app_id = self.app_id.clone();
        let bounds = self.bounds.clone();
        let read = self
            .bounds
            .queue
            .run(move |q| {
                let _ = q.expire(now_ms());
                let records = q.pending(&app_id, from, RESUME_AT_MOST)?;
                let read = (records.len(), records.last().map(|r| r.id));
                // A retried dead letter is `resume_retried`'s to hand over. Checked here,
                // off the runtime: `Webhooks::retry` holds this lock across its write.
                let retried = bounds.retried.lock();
                let records = records
                    .into_iter()
                    .filter(|r| !retried.contains(&r.id))
                    .collect::<Vec<_>>();
                Ok::<_, super::StoreError>((records, read))
            })
            .await;
        let (records, (count, last)) = match read {
            Some(Ok(read)) => read,
            Some(Err(error)) => {
                tracing::error!(app_id = %self.app_id, %error, "Webhook queue could not be read");
                return false;
            }
            None => return false,
        };
        let complete = count < RESUME_AT_MOST;
        for record in records {
            if !self.hand(record, true) {
                return false;
            }
        }
        let mut waiting = self.bounds.waiting_from.lock();
        *waiting = match (complete, last) {
            (true, _) => None,
            (false, Some(last)) => Some(last + 1),
            (false, None) => Some(from),
        };
        waiting.is_some()
    }
}

/// What woke a dispatcher.
enum Woke {
    /// An event, or `None`: every sender is gone.
    Event(Option<WebhookEvent>),
    /// A deadline (the batch window, a hold-back), or the start of the node's drain.
    Tick,
    /// The node has left its cluster: the last flush.
    Last,
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
