//! A pending batch's attempts so far, kept beside its stream entry (which cannot change) so
//! that `herald webhooks list` and `show` tell on any node how its delivery goes.

use serde::{Deserialize, Serialize};

use crate::webhooks::Record;

/// The longest error kept: the progress hash holds one per pending batch, and the byte
/// bound does not count it.
const MAX_ERROR: usize = 200;

/// What changes in a batch from one attempt to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Progress {
    attempts: u32,
    next_attempt_ms: u64,
    last_status: Option<u16>,
    last_error: Option<String>,
}

impl Progress {
    pub(super) fn of(record: &Record) -> Progress {
        Progress {
            attempts: record.attempts,
            next_attempt_ms: record.next_attempt_ms,
            last_status: record.last_status,
            last_error: record.last_error.as_ref().map(|e| {
                let mut end = e.len().min(MAX_ERROR);
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                e[..end].to_owned()
            }),
        }
    }

    pub(super) fn encode(&self) -> String {
        // Plain data of numbers and strings: serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `text` read back, if it is a progress (a foreign value is ignored).
    pub(super) fn decode(text: &str) -> Option<Progress> {
        serde_json::from_str(text).ok()
    }

    /// The record as its last attempt left it.
    pub(super) fn apply(self, record: &mut Record) {
        record.attempts = self.attempts;
        record.next_attempt_ms = self.next_attempt_ms;
        record.last_status = self.last_status;
        record.last_error = self.last_error;
    }
}
