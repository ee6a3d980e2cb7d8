//! Prints a channel's history, then follows it: every 2 seconds, the events published since
//! the last one seen, by serial.
//!
//! ```sh
//! PUSHER_URL=http://app-key:app-secret@127.0.0.1:6001/apps/1 cargo run -p herald-sdk --example history -- my-channel
//! ```
//!
//! The app needs `history_max_events` set (see docs/recovery.md).

use std::time::Duration;

use herald_sdk::{Client, HistoryQuery};

#[tokio::main]
async fn main() -> Result<(), herald_sdk::Error> {
    let channel = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "my-channel".to_owned());
    let client = Client::from_env()?;
    let mut last = 0;
    let mut query = HistoryQuery::new().limit(20);
    loop {
        let page = client.history(&channel, &query).await?;
        // A channel's serials follow each other: a jump past the last one seen is events
        // evicted before this poll read them.
        if last > 0 && page.oldest_serial > last + 1 {
            println!(
                "(events between {last} and {} were evicted)",
                page.oldest_serial
            );
        }
        for event in &page.events {
            println!("#{} {} {}", event.serial, event.event, event.data);
            last = event.serial;
        }
        query = HistoryQuery::new().after(last).limit(1000);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
