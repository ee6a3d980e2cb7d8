//! A webhook receiver for the tests of webhook delivery: it keeps every request (id,
//! signature, body) and answers with the statuses it is given.

use std::sync::{Arc, Mutex};

use herald_protocol::webhook::verify_webhook_signature;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::SECRET;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub signature: String,
    pub body: String,
    pub status: &'static str,
}

impl Got {
    pub fn events(&self) -> Vec<Value> {
        let body: Value = serde_json::from_str(&self.body).expect("a JSON body");
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

/// A webhook receiver on `port`, answering its n-th request with `statuses[n]` (the last
/// one after them); down once dropped.
pub struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn up(port: u16, statuses: Vec<&'static str>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver's port");
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let request = loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                            .unwrap_or_default()
                    };
                    let len: usize = header("content-length").parse().unwrap_or(0);
                    if body.len() < len {
                        continue;
                    }
                    break Some((
                        header("x-herald-webhook-id"),
                        header("x-pusher-signature"),
                        body[..len].to_owned(),
                    ));
                };
                let Some((id, signature, body)) = request else {
                    continue;
                };
                let status = {
                    let mut got = seen.lock().expect("lock");
                    let status = statuses[got.len().min(statuses.len() - 1)];
                    got.push(Got {
                        id,
                        signature,
                        body,
                        status,
                    });
                    status
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        Receiver { got, task }
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }
}

/// Every delivery is signed over its body exactly, and carries an id that names one body.
pub fn assert_signed_and_identified(got: &[Got]) {
    let mut bodies = std::collections::HashMap::new();
    for g in got {
        assert!(
            verify_webhook_signature(SECRET, g.body.as_bytes(), &g.signature),
            "the signature holds over the body byte for byte: {g:?}"
        );
        assert!(g.id.parse::<u64>().is_ok(), "an id: {g:?}");
        let body = bodies.entry(g.id.clone()).or_insert_with(|| g.body.clone());
        assert_eq!(*body, g.body, "one id, one body");
    }
}

/// Per channel, `channel_occupied` reached the receiver before `channel_vacated`.
pub fn assert_occupied_before_vacated(got: &[Got], channels: &[String]) {
    let events: Vec<Value> = got.iter().flat_map(Got::events).collect();
    for channel in channels {
        let first = |name: &str| {
            events
                .iter()
                .position(|e| e["channel"] == channel.as_str() && e["name"] == name)
                .unwrap_or_else(|| panic!("no {name} on {channel}: {events:?}"))
        };
        assert!(
            first("channel_occupied") < first("channel_vacated"),
            "{channel}: {events:?}"
        );
    }
}

/// Each request's first event name, with the status it was answered.
pub fn first_names(got: &[Got]) -> Vec<(String, &'static str)> {
    got.iter()
        .map(|g| {
            (
                g.events()[0]["name"].as_str().unwrap_or("").to_owned(),
                g.status,
            )
        })
        .collect()
}
