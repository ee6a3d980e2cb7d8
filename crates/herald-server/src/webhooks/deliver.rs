//! The delivery of one stored batch to one endpoint: its turn, its attempts and their
//! backoff (with jitter), the queue told of each outcome (removed when delivered,
//! rescheduled after a failure, a dead letter once the retry period has passed), and what
//! the metrics and the console see of them.

use std::time::Duration;

use herald_protocol::webhook::{HEADER_KEY, HEADER_SIGNATURE, WEBHOOK_CONTENT_TYPE};
use rand::Rng;

use crate::metrics::WebhookOutcome;

use super::bounds::Reserved;
use super::store::{now_ms, Record};
use super::{order, reach, Refused};

/// The header carrying a batch's id, the same across retries and restarts, so a receiver
/// can drop a batch it already has.
pub const HEADER_ID: &str = "X-Herald-Webhook-Id";

/// Where one stored batch goes.
pub(super) struct Delivery {
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    /// The URL's host, for a refusal's log line.
    pub(super) host: String,
    /// Set when the URL's address may not be reached: nothing is sent.
    pub(super) refused: Option<Refused>,
}

/// Why a delivery attempt did not get an answer.
enum Failed {
    /// The endpoint's address may not be reached: nothing was sent.
    Refused(Refused),
    /// The request failed (connection, timeout).
    Error(reqwest::Error),
}

/// The first wait before writing a delivery's end again, doubling up to
/// [`END_RETRY_MAX`].
const END_RETRY: Duration = Duration::from_millis(100);
const END_RETRY_MAX: Duration = Duration::from_secs(2);

/// How the attempts of one batch ended.
#[derive(Clone, Copy)]
enum End {
    Delivered,
    /// Given up: it becomes a dead letter.
    Dead,
}

/// The event names of a webhook body, for the console.
fn event_names(body: &[u8]) -> Vec<String> {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    parsed["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Posts one stored batch once its turn has come, retrying with exponential backoff and
/// jitter until a 2xx answer or until the retry period has passed since it was written; a
/// redirect is not followed, and not retried either. Delivered, it leaves the queue; given
/// up, it becomes a dead letter. While the node shuts down, backoffs are short (see
/// [`super::flush`]); a delivery cut by the end of the process stays in the queue.
pub(super) async fn deliver(
    delivery: Delivery,
    mut record: Record,
    reserved: Reserved,
    mut turn: order::Turn,
) {
    turn.wait().await;
    let queue = reserved.bounds.queue.clone();
    // Earlier batches on its channels that other nodes of a cluster hold.
    queue.after_earlier(&record).await;
    let flush = &reserved.bounds.flush;
    let due_in = record.next_attempt_ms.saturating_sub(now_ms());
    if due_in > 0 {
        flush.wait_out(Duration::from_millis(due_in)).await;
    }
    let end = attempts(&delivery, &mut record, &reserved).await;
    // Tried until the queue answers (a cluster's may be away a while): a batch left in it
    // is sent again, and in a cluster holds back the later batches on its channels. Given
    // up once the node drains: the batch stays, and is sent again after the restart.
    let mut pause = END_RETRY;
    for tries in 1.. {
        let mut ended = record.clone();
        let outcome = match end {
            End::Delivered => queue.run(move |q| q.ack(&ended)).await,
            End::Dead => {
                queue
                    .run(move |q| q.dead_letter(&mut ended, now_ms()))
                    .await
            }
        };
        let Some(Err(error)) = outcome else { break };
        if tries == 1 {
            tracing::error!(%error, "Webhook queue could not record a delivery's end: trying again until it answers");
        }
        if flush.now.is_cancelled() {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(END_RETRY_MAX);
    }
    // The delivery's turn ends only now, so a later batch on its channels never overtakes
    // it in the queue either.
    drop(turn);
}

/// The attempts of one batch, until it is delivered or given up.
async fn attempts(delivery: &Delivery, record: &mut Record, reserved: &Reserved) -> End {
    let metrics = &reserved.bounds.metrics;
    let flush = &reserved.bounds.flush;
    let queue = &reserved.bounds.queue;
    let retry_ms = reserved.bounds.retry_period.as_millis() as u64;
    let Delivery {
        client,
        url,
        host,
        refused,
    } = delivery;
    let shown_url = crate::redact::redact_url(url);
    let id = record.header_id().to_string();
    loop {
        record.attempts += 1;
        let attempt = record.attempts;
        let result = match refused {
            Some(refused) => Err(Failed::Refused(refused.clone())),
            None => client
                .post(url.as_str())
                .header("Content-Type", WEBHOOK_CONTENT_TYPE)
                .header(HEADER_KEY, &record.key)
                .header(HEADER_SIGNATURE, &record.signature)
                .header(HEADER_ID, &id)
                .body(record.body.clone())
                .send()
                .await
                .map_err(|error| match reach::refusal(&error) {
                    Some(refused) => Failed::Refused(refused.clone()),
                    None => Failed::Error(error),
                }),
        };
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let shown = |outcome: &'static str| {
            metrics.console.emit("webhook", |row| {
                row.insert("url".into(), shown_url.as_str().into());
                row.insert("status".into(), status.into());
                row.insert("attempt".into(), attempt.into());
                row.insert("events".into(), event_names(record.body.as_bytes()).into());
                row.insert("outcome".into(), outcome.into());
            });
        };
        let result = match result {
            // Nothing was sent, and no retry would be let through.
            Err(Failed::Refused(refused)) => {
                reserved.bounds.refused(&record.app_id, host, &refused);
                shown("refused");
                record.last_error = Some(format!("not sent: {refused}"));
                return End::Dead;
            }
            Err(Failed::Error(error)) => Err(error),
            Ok(response) => Ok(response),
        };
        metrics.webhook(WebhookOutcome::Attempt, 1);
        metrics.webhook_status(status);
        record.last_status = status;
        let problem = match result {
            Ok(response) if response.status().is_success() => {
                metrics.webhook(WebhookOutcome::Success, 1);
                shown("delivered");
                return End::Delivered;
            }
            Ok(response) if response.status().is_redirection() => {
                metrics.webhook(WebhookOutcome::Failure, 1);
                shown("failed");
                record.last_error = Some(format!(
                    "status {}: a redirect, not followed",
                    response.status()
                ));
                tracing::warn!(
                    app_id = record.app_id,
                    url = %shown_url,
                    status = %response.status(),
                    "Webhook endpoint answered a redirect; redirects are not followed, so this batch is a dead letter: configure the final URL"
                );
                return End::Dead;
            }
            Ok(response) => format!("status {}", response.status()),
            // reqwest's error names the URL, which may carry a password.
            Err(error) => error.without_url().to_string(),
        };
        record.last_error = Some(problem.clone());
        let backoff = flush.backoff(attempt, jitter());
        let now = now_ms();
        if now + backoff.as_millis() as u64 > record.created_ms + retry_ms {
            metrics.webhook(WebhookOutcome::Failure, 1);
            shown("failed");
            tracing::warn!(
                app_id = record.app_id,
                url = %shown_url,
                attempt,
                problem,
                "Webhook batch is a dead letter after retrying for webhook_retry_period"
            );
            return End::Dead;
        }
        metrics.webhook(WebhookOutcome::Retry, 1);
        shown("retry");
        tracing::debug!(app_id = record.app_id, url = %shown_url, attempt, problem, retry_in = ?backoff, "Webhook delivery failed");
        record.next_attempt_ms = now + backoff.as_millis() as u64;
        // Written in memory too: `herald webhooks show` reads the attempts and the error.
        let saved = record.clone();
        if let Some(Err(error)) = queue.run(move |q| q.reschedule(&saved)).await {
            tracing::error!(%error, "Webhook queue could not record a failed attempt");
        }
        flush.wait_out(backoff).await;
    }
}

/// A factor in [0.5, 1.0) that spreads the retries of many batches failing at once.
fn jitter() -> f64 {
    rand::thread_rng().gen_range(0.5..1.0)
}
