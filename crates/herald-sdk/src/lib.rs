//! Server-side SDK for the Pusher Channels HTTP API (work in progress, issue 3).
