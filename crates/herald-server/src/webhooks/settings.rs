//! How webhooks are delivered: the `channel_vacated` hold-back, the bounds on what one
//! app's deliveries may hold while receivers are slow or failing, and where the queue
//! lives.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::declare::settings;
use crate::config::kinds::{Choice, Choices, Count, FilePath, Millis, Secs};

/// Where the webhook queue lives (`webhook_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStoreKind {
    /// On disk under `data_dir`: batches outlive the process.
    Disk,
    /// In memory: a restart loses what is not delivered.
    Memory,
}

impl Choices for WebhookStoreKind {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("disk", WebhookStoreKind::Disk),
        ("memory", WebhookStoreKind::Memory),
    ];
}

const HOUR: Duration = Duration::from_secs(3600);
const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
/// One batch of events.
const BATCH_BYTES: usize = 64 * 1024;

settings! {
    /// How webhooks are delivered, and the bounds on what one app's deliveries may hold.
    pub struct WebhookOptions(RawWebhookOptions) in "Webhooks" {
        /// How long a `channel_vacated` webhook is held back; a channel occupied again
        /// within it reports neither event, so quick reconnects do not flap.
        vacated_delay: Millis = Duration::from_secs(1), key "webhook_vacated_delay_ms", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds";
        /// Webhook deliveries in flight for one app; batches beyond are dropped and counted.
        max_in_flight: Count<usize> = 64, key "webhook_max_in_flight", Restart,
            check |v| *v >= 1 => "must be at least 1";
        /// Bytes of webhook bodies one app may hold for delivery and retry.
        max_queued_bytes: Count<usize> = 8 * 1024 * 1024, key "webhook_max_queued_bytes", Restart,
            check |v| *v >= BATCH_BYTES => "must be at least 65536 (one batch of events)";
        /// Where the webhook queue lives: on disk under `data_dir` (the default), or in
        /// memory (lost at a restart).
        store: Choice<WebhookStoreKind> = if cfg!(test) {
            // Unit tests build many configs in one process and in the crate's directory:
            // they keep the queue in memory, and the binary's default is the disk.
            WebhookStoreKind::Memory
        } else {
            WebhookStoreKind::Disk
        }, key "webhook_store" env "HERALD_WEBHOOK_STORE", Restart;
        /// The node's data directory: the durable webhook queue (in a cluster, the
        /// batches the cluster's queue could not take yet), locked by one process at a time.
        data_dir: FilePath = PathBuf::from("./herald-data"), key "data_dir" env "HERALD_DATA_DIR", Restart;
        /// How long a failing webhook batch is retried before it becomes a dead letter.
        retry_period: Secs = Duration::from_secs(24 * 3600), key "webhook_retry_period", Restart,
            check |v| !v.is_zero() => "must be at least 1 second",
            check |v| *v <= YEAR => "must be at most 31622400 seconds";
        /// How long a dead letter is kept.
        dead_letter_ttl: Secs = Duration::from_secs(7 * 24 * 3600), key "webhook_dead_letter_ttl", Restart,
            check |v| !v.is_zero() => "must be at least 1 second",
            check |v| *v <= YEAR => "must be at most 31622400 seconds";
        /// Bytes of webhook batches one app may keep in the queue, dead letters included.
        max_stored_bytes: Count<usize> = 256 * 1024 * 1024, key "webhook_max_stored_bytes", Restart,
            check |v| *v >= BATCH_BYTES => "must be at least 65536 (one batch of events)";
        /// In a cluster, how long a node's batch may go untouched before another node
        /// claims it (a dead node's batches are sent by the others after this).
        lease: Secs = Duration::from_secs(30), key "webhook_lease", Restart,
            check |v| !v.is_zero() => "must be at least 1 second",
            check |v| *v <= YEAR => "must be at most 31622400 seconds",
            // A node renews its lease every second at the least: a shorter lease would let
            // the others claim the batches of a live node.
            check |v| *v >= Duration::from_secs(2) => "must be at least 2 seconds";
    }
}
