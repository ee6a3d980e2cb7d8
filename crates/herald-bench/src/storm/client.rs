//! One storm client: connect, sign in and subscribe as pusher-js does, then come back after
//! every close until the run stops, recording what it received on each connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Semaphore};

use crate::http::App;
use crate::modes::nanos_since;
use crate::scan::{find, frame_bounds, leading_number, take_frame};
use herald_protocol::frame::Signin;

use crate::wsclient::Client;

use super::{Names, Outcome, Refusal, Shared, ATTEMPT_TIMEOUT};

/// The `pusher:signin` message for `user_data`, signed with `auth`.
pub(super) fn signin_message(auth: &str, user_data: &str) -> String {
    Signin::new(auth, user_data).to_frame()
}

/// The opcode and payload of the next frame (inflated if it came compressed). Reads into
/// the client's own buffer rather than a buffer on the stack, which would sit in every one
/// of the clients' tasks.
async fn next(c: &mut Client) -> std::io::Result<(u8, Vec<u8>)> {
    loop {
        if frame_bounds(&c.buf).is_some() {
            let opcode = c.buf[0] & 0x0f;
            if let Some(payload) = take_frame(&mut c.buf, c.deflate)? {
                return Ok((opcode, payload));
            }
        }
        if c.buf.capacity() - c.buf.len() < 1024 {
            c.buf.reserve(4096);
        }
        let n = c.stream.read_buf(&mut c.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        c.wire_bytes += n as u64;
    }
}

/// The code of a Close frame's payload, as text.
pub(super) fn close_code(payload: &[u8]) -> String {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]).to_string(),
        _ => "1005".to_owned(),
    }
}

/// The publish time and sequence number of a storm event, without parsing the JSON.
pub(super) fn event(frame: &[u8]) -> Option<(u64, u64)> {
    let (t, n) = (br#"\"t\":"#, br#"\"n\":"#);
    let t = leading_number(&frame[find(frame, t)? + t.len()..])?;
    let n = leading_number(&frame[find(frame, n)? + n.len()..])?;
    Some((t, n))
}

/// The `refused_by` reason of a failed `Client::connect`.
fn connect_refusal(error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    let text = error.to_string();
    if text == "upgrade refused" {
        "http"
    } else if text.contains("pusher") {
        "pusher_error"
    } else if matches!(
        error.kind(),
        ConnectionRefused | AddrNotAvailable | AddrInUse | TimedOut
    ) {
        "connect"
    } else {
        "closed"
    }
}

/// Connects, signs in as `user_data`'s user and subscribes to `channel`, as pusher-js does
/// on every (re)connection: the sign-in and the subscription go out together, and the client
/// is back once both are confirmed. A `subscription_error` (Herald's ServerBusy, say) leaves
/// the socket open, so only the subscription is retried, as an app told to "retry shortly"
/// would; each one counts as a refusal.
async fn establish(
    app: &App,
    addr: SocketAddr,
    i: usize,
    channel: &str,
    user_data: &str,
    shared: &Shared,
    setup: bool,
) -> Result<Client, Refusal> {
    let attempt = async {
        let mut c = Client::connect(app, addr, i)
            .await
            .map_err(|e| (connect_refusal(&e), e.to_string()))?;
        let io = |e: std::io::Error| ("closed", e.to_string());
        let auth = herald_protocol::auth::user_auth(&app.key, &app.secret, &c.socket_id, user_data);
        c.send_text(&signin_message(&auth, user_data))
            .await
            .map_err(io)?;
        let subscribe = c.subscribe_message(channel, None, None);
        c.send_text(&subscribe).await.map_err(io)?;
        let (mut signed_in, mut subscribed, mut retries) = (false, false, 0);
        while !(signed_in && subscribed) {
            let (opcode, frame) = next(&mut c).await.map_err(io)?;
            let text = || String::from_utf8_lossy(&frame).into_owned();
            if opcode == 0x8 {
                return Err(("closed", format!("close {}", close_code(&frame))));
            } else if find(&frame, b"signin_success").is_some() {
                signed_in = true;
            } else if find(&frame, b"subscription_succeeded").is_some() {
                subscribed = true;
            } else if find(&frame, b"subscription_error").is_some() {
                shared.refuse(setup, "subscription_error", text());
                retries += 1;
                tokio::time::sleep(backoff(retries, i)).await;
                c.send_text(&subscribe).await.map_err(io)?;
            } else if find(&frame, b"pusher:error").is_some() || find(&frame, b"_error").is_some() {
                return Err(("pusher_error", text()));
            }
        }
        Ok(c)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(("timeout", format!("not back within {ATTEMPT_TIMEOUT:?}"))))
}

/// Tries until the client is back, after a short backoff each time; `None` if the run
/// stopped first.
async fn come_back(
    app: &App,
    addr: SocketAddr,
    i: usize,
    (channel, user_data): (&str, &str),
    shared: &Shared,
    setup: bool,
    stop: &mut watch::Receiver<bool>,
) -> Option<Client> {
    let mut attempt = 0;
    loop {
        // Boxed: the handshake's state is large, and most clients are not in one.
        let result = tokio::select! {
            r = Box::pin(establish(app, addr, i, channel, user_data, shared, setup)) => r,
            _ = stop.wait_for(|s| *s) => return None,
        };
        match result {
            Ok(c) => return Some(c),
            Err((reason, detail)) => {
                shared.refuse(setup, reason, detail);
                attempt += 1;
                if sleep_or_stop(backoff(attempt, i), stop).await {
                    return None;
                }
            }
        }
    }
}

/// Sleeps `duration`; true if the run was stopped meanwhile.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// The wait before retry `attempt` (1, 2, ...) of client `i`: short, since the point is to
/// finish the run and count the refusals, spread a little so retries do not come in step.
pub(super) fn backoff(attempt: u32, i: usize) -> Duration {
    let base = 50u64 << attempt.saturating_sub(1).min(5);
    Duration::from_millis(base.min(1000) + (i % 50) as u64)
}

/// One client over the whole run.
pub(super) async fn client(
    i: usize,
    app: App,
    names: Arc<Names>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let base = shared.base;
    let mut out = Outcome {
        channel: i % names.channels,
        ..Outcome::default()
    };
    let channel = names.channel(out.channel);
    let user_data = format!(r#"{{"id":"{}"}}"#, names.user(i % names.users));
    let identity = (channel.as_str(), user_data.as_str());
    let permit = gate.acquire().await;
    let first = come_back(
        &app,
        names.connect_to,
        i,
        identity,
        &shared,
        true,
        &mut stop,
    );
    let Some(mut c) = first.await else {
        return out;
    };
    drop(permit);
    out.session_at = nanos_since(base);
    out.live = true;
    shared.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        let frame = tokio::select! {
            frame = next(&mut c) => frame,
            _ = stop.wait_for(|s| *s) => return out,
        };
        let code = match frame {
            Ok((0x8, payload)) => close_code(&payload),
            Err(_) => "1006".to_owned(),
            Ok((_, frame)) => {
                if let Some((at, n)) = event(&frame) {
                    let now = nanos_since(base);
                    out.latencies.push(now.saturating_sub(at));
                    out.session.push(n);
                    out.first.get_or_insert((at, now));
                }
                continue;
            }
        };
        // Dropped without a Close of its own: the server takes the end of the stream for
        // one, and the client is on its way back sooner.
        drop(c);
        out.live = false;
        let closed_at = nanos_since(base);
        shared.tally(|t| *t.close_codes.entry(code).or_default() += 1);
        if !shared.storm_started() {
            out.closed_before_storm += 1;
        } else if out.closed_at.is_none() {
            out.closed_at = Some(closed_at);
        }
        // At once, as pusher-js does on 4200, whatever the code.
        let again = come_back(
            &app,
            names.reconnect_to,
            i,
            identity,
            &shared,
            false,
            &mut stop,
        );
        let Some(fresh) = again.await else {
            return out;
        };
        c = fresh;
        let now = nanos_since(base);
        if out.closed_at.is_some() && out.back_at.is_none() {
            out.back_at = Some(now);
            shared.back.fetch_add(1, Ordering::Relaxed);
        }
        out.session_at = now;
        out.live = true;
        out.session.clear();
        out.first = None;
    }
}
