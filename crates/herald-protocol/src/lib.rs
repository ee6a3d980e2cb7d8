//! The Pusher Channels protocol as pure code, shared by the Herald server, SDK and CLI.
//!
//! This crate does no I/O and reads no clock: callers pass the time in. It holds the wire
//! messages of WebSocket protocol 7 ([`frame`]), the channel and event name rules
//! ([`channel`]), the HTTP API request signature ([`signing`]), channel and user auth
//! signatures ([`auth`]), the HTTP API's request and answer bodies ([`api`]), the history API answer ([`history`]), presence member data ([`presence`]), the webhook signature
//! ([`webhook`]), the end-to-end encrypted channel scheme ([`encryption`]) and RFC 6455
//! framing ([`websocket`]) with permessage-deflate ([`deflate`]).
//! The server verifies with the same functions the SDK signs with, so the two cannot drift.

pub mod api;
pub mod auth;
pub mod channel;
pub mod close;
pub mod deflate;
pub mod encryption;
pub mod frame;
pub mod history;
pub mod hmac_hex;
pub mod presence;
pub mod signing;
pub mod user;
pub mod webhook;
pub mod websocket;
