//! Which part of a channel's history a request asks for.

/// Which part of a channel's history a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query {
    /// At most this many events.
    pub(crate) limit: usize,
    /// Only events with a serial below this one.
    pub(crate) before: Option<u64>,
    /// Only events with a serial above this one; the page then starts right after it
    /// (without it, a page is the newest events that match).
    pub(crate) after: Option<u64>,
}
