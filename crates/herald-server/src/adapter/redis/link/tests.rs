//! The link against real servers.
