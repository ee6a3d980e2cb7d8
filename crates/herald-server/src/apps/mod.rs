//! The app store: the seam through which the server finds an app by id (HTTP API) or key
//! (WebSocket), and each app's live state.
//!
//! Lookups are synchronous and answer from memory so the hot path never awaits. The
//! in-memory store, [`MemoryApps`], is also what a reload changes: [`MemoryApps::apply`]
//! takes a new set of app configs and swaps in new lookup maps at once, keeping each app
//! whose id is still there (its hub, users, cache and connections untouched) and giving it
//! the new config. A store that loads apps from elsewhere (a database) refreshes into a
//! `MemoryApps` the same way.

mod app;
mod store;
#[cfg(test)]
mod tests;
mod update;

pub use self::app::{App, ConnectionSlot};
pub use self::store::{lookup, AppChanges, AppRef, AppStore, MemoryApps};
pub use self::update::AppUpdate;
