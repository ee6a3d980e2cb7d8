//! The bodies of the HTTP API, one type per message, shared by the server (which parses
//! requests and writes answers), the SDK (which writes requests and parses answers) and
//! the bench.
//!
//! Requests borrow from the body they were parsed from: a trigger's `data` stays the JSON
//! token it arrived as ([`RawJson`]), and names without escapes are not copied. Field order
//! is the Node library's, so a request written from these types is byte-identical to the
//! one the official library sends for the same inputs (its body MD5 is signed).

mod answers;
pub(crate) mod borrow;
mod trigger;

pub use answers::{
    BatchAnswer, ChannelAnswer, ChannelAttributes, ChannelsAnswer, ErrorBody, TriggerAnswer,
    UserEntry, UsersAnswer,
};
pub use trigger::{BatchBody, BatchItem, RawJson, TriggerBody, MAX_ITEMS};

#[cfg(test)]
mod tests;
