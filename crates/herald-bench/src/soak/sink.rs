//! The soak's webhook sink: a minimal HTTP server that answers 200 and counts events.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use serde_json::Value;

use super::ctx::Ctx;
use crate::scan::find;

/// The webhook sink: answers 200 to every request and counts the events of each POST.
pub(super) async fn webhook_sink(listener: TcpListener, ctx: Arc<Ctx>) {
    while let Ok((socket, _)) = listener.accept().await {
        tokio::spawn(webhook_connection(socket, ctx.clone()));
    }
}

async fn webhook_connection(mut socket: TcpStream, ctx: Arc<Ctx>) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let total = head_end + 4 + length;
        while buf.len() < total {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if head.starts_with("post ") {
            ctx.webhook_posts.fetch_add(1, Ordering::Relaxed);
            count_webhook_events(&buf[head_end + 4..total], &ctx);
        }
        buf.drain(..total);
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        if socket.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Counts a Pusher webhook body's events (`{"time_ms":…,"events":[{"name":…},…]}`) by name.
fn count_webhook_events(body: &[u8], ctx: &Ctx) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        ctx.error("webhook_body");
        return;
    };
    let Some(events) = value["events"].as_array() else {
        ctx.error("webhook_body");
        return;
    };
    if let Ok(mut names) = ctx.webhook_events.lock() {
        for event in events {
            let name = event["name"].as_str().unwrap_or("?").to_owned();
            *names.entry(name).or_default() += 1;
        }
    }
}
