//! The operators' tools on one app's webhook queue, as the admin API serves them
//! (`herald webhooks list | show | retry | purge`, and the console's retry button): the
//! queue's calls run off the runtime's threads, and a retried dead letter is handed to the
//! app's dispatcher at once.

use serde::Serialize;

use super::store::{BatchId, Filter, Record, State};
use super::{StoreError, Webhooks};

/// Batches listed at most per page.
pub(crate) const MAX_PAGE: usize = 100;

/// One batch as a listing shows it: everything but its body.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// The batch's place in the queue (what `show` and `retry` take), as text: ids pass
    /// 2^53, past a JavaScript number. Also its `X-Herald-Webhook-Id`, unless `sent_as`.
    pub(crate) id: String,
    /// The `X-Herald-Webhook-Id` receivers get, when it is not `id`: a dead letter retried
    /// on a cluster's queue takes a new place and keeps its first id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sent_as: Option<String>,
    pub(crate) state: State,
    /// The endpoint, its credentials masked.
    pub(crate) url: String,
    pub(crate) created_ms: u64,
    pub(crate) attempts: u32,
    /// When the next attempt is due (pending; 0: at once).
    pub(crate) next_attempt_ms: u64,
    pub(crate) dead_ms: Option<u64>,
    pub(crate) last_status: Option<u16>,
    pub(crate) last_error: Option<String>,
    pub(crate) channels: Vec<String>,
    pub(crate) bytes: usize,
}

impl From<&Record> for Summary {
    fn from(r: &Record) -> Summary {
        Summary {
            id: r.id.to_string(),
            sent_as: r.sent_as.map(|id| id.to_string()),
            state: r.state(),
            url: crate::redact::redact_url(&r.url),
            created_ms: r.created_ms,
            attempts: r.attempts,
            next_attempt_ms: r.next_attempt_ms,
            dead_ms: r.dead_ms,
            last_status: r.last_status,
            last_error: r.last_error.clone(),
            channels: r.channels.clone(),
            bytes: r.body.len(),
        }
    }
}

/// One batch whole: its summary and the body as signed and sent.
#[derive(Debug, Serialize)]
pub(crate) struct Shown {
    #[serde(flatten)]
    pub(crate) summary: Summary,
    pub(crate) body: String,
}

/// A page of a listing, and the cursor of the next one when there may be more.
#[derive(Debug, Serialize)]
pub(crate) struct Page {
    pub(crate) batches: Vec<Summary>,
    /// Pass as `after` for the next page.
    pub(crate) next: Option<String>,
}

/// Which of the app's batches: of one endpoint (its URL as configured) or all, in one
/// state or both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Which {
    pub(crate) endpoint: Option<String>,
    pub(crate) state: Option<State>,
}

/// Why a tool could not do its work.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task was cut (the runtime is stopping).
    #[error("the webhook queue did not answer (the node is stopping)")]
    Stopped,
}

impl Webhooks {
    fn filter(&self, which: Which) -> Filter {
        Filter {
            app_id: self.bounds.app_id.clone(),
            endpoint: which.endpoint,
            state: which.state,
        }
    }

    /// A page of the app's batches with an id above `after`, at most `limit`
    /// (at most [`MAX_PAGE`]).
    pub(crate) async fn list(
        &self,
        which: Which,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Page, ToolError> {
        let filter = self.filter(which);
        let limit = limit.clamp(1, MAX_PAGE);
        let records = self
            .bounds
            .queue
            .run(move |q| q.list(&filter, after, limit))
            .await
            .ok_or(ToolError::Stopped)??;
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.id.to_string()))
            .flatten();
        Ok(Page {
            batches: records.iter().map(Summary::from).collect(),
            next,
        })
    }

    /// The app's batch `id`, whole.
    pub(crate) async fn show(&self, id: BatchId) -> Result<Option<Shown>, ToolError> {
        let app_id = self.bounds.app_id.clone();
        let record = self
            .bounds
            .queue
            .run(move |q| q.show(id))
            .await
            .ok_or(ToolError::Stopped)??;
        Ok(record.filter(|r| r.app_id == app_id).map(|r| Shown {
            summary: Summary::from(&r),
            body: r.body,
        }))
    }

    /// Makes the app's dead letters `which` names (or only `id`) pending again and hands
    /// them to deliveries now; returns their ids.
    pub(crate) async fn retry(
        &self,
        which: Which,
        id: Option<BatchId>,
    ) -> Result<Vec<BatchId>, ToolError> {
        let filter = self.filter(which);
        let bounds = self.bounds.clone();
        let retried = self
            .bounds
            .queue
            .run(move |q| {
                // Held across the write, so the dispatcher's pager, which skips the ids
                // here, never sees one pending and not yet listed (it would send it twice).
                let mut retried = bounds.retried.lock();
                let ids = q.retry(&filter, id, super::now_ms())?;
                retried.extend(ids.iter().copied());
                Ok::<_, StoreError>(ids)
            })
            .await
            .ok_or(ToolError::Stopped)??;
        self.bounds.retry.notify_one();
        Ok(retried)
    }

    /// Removes the app's dead letters of `which`'s endpoint, and its pending batches too
    /// when `pending` (`which`'s state is not read); returns how many.
    pub(crate) async fn purge(&self, which: Which, pending: bool) -> Result<usize, ToolError> {
        let filter = Filter {
            state: (!pending).then_some(State::Dead),
            ..self.filter(which)
        };
        Ok(self
            .bounds
            .queue
            .run(move |q| q.purge(&filter))
            .await
            .ok_or(ToolError::Stopped)??)
    }
}
