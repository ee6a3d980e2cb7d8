//! The delivery of one signed body to one endpoint: its turn, its attempts and their
//! backoff, and what the metrics and the console see of them.

use std::time::Duration;

use herald_protocol::webhook::{HEADER_KEY, HEADER_SIGNATURE, WEBHOOK_CONTENT_TYPE};
use tokio::time::Instant;

use crate::metrics::WebhookOutcome;

use super::bounds::Reserved;
use super::{order, reach, Refused};

/// How long a failing batch is retried.
const RETRY_FOR: Duration = Duration::from_secs(5 * 60);

/// One signed body and where it goes.
pub(super) struct Delivery {
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    /// The URL's host, for a refusal's log line.
    pub(super) host: String,
    /// Set when the URL's address may not be reached: nothing is sent.
    pub(super) refused: Option<Refused>,
    pub(super) app_id: String,
    pub(super) key: String,
    pub(super) signature: String,
    pub(super) body: String,
}

/// Why a delivery attempt did not get an answer.
enum Failed {
    /// The endpoint's address may not be reached: nothing was sent.
    Refused(Refused),
    /// The request failed (connection, timeout).
    Error(reqwest::Error),
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

/// Posts one signed body once its turn has come, retrying with exponential backoff until a
/// 2xx answer or until [`RETRY_FOR`] has passed; a redirect is not followed, and not
/// retried either. While the node shuts down, backoffs are short (see [`super::flush`]).
pub(super) async fn deliver(delivery: Delivery, reserved: Reserved, mut turn: order::Turn) {
    turn.wait().await;
    let metrics = &reserved.bounds.metrics;
    let flush = &reserved.bounds.flush;
    let Delivery {
        client,
        url,
        host,
        refused,
        app_id,
        key,
        signature,
        body,
    } = delivery;
    let shown_url = crate::config::redact_url(&url);
    let url = url.as_str();
    let started = Instant::now();
    let mut backoff = flush.first_backoff();
    let mut attempt = 1u32;
    loop {
        let result = match &refused {
            Some(refused) => Err(Failed::Refused(refused.clone())),
            None => client
                .post(url)
                .header("Content-Type", WEBHOOK_CONTENT_TYPE)
                .header(HEADER_KEY, &key)
                .header(HEADER_SIGNATURE, &signature)
                .body(body.clone())
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
                row.insert("events".into(), event_names(body.as_bytes()).into());
                row.insert("outcome".into(), outcome.into());
            });
        };
        let result = match result {
            // Nothing was sent, and no retry would be let through.
            Err(Failed::Refused(refused)) => {
                reserved.bounds.refused(&app_id, &host, &refused);
                shown("refused");
                return;
            }
            Err(Failed::Error(error)) => Err(error),
            Ok(response) => Ok(response),
        };
        metrics.webhook(WebhookOutcome::Attempt, 1);
        let problem = match result {
            Ok(response) if response.status().is_success() => {
                metrics.webhook(WebhookOutcome::Success, 1);
                shown("delivered");
                return;
            }
            Ok(response) if response.status().is_redirection() => {
                metrics.webhook(WebhookOutcome::Failure, 1);
                shown("failed");
                tracing::warn!(
                    app_id,
                    url = %shown_url,
                    status = %response.status(),
                    "Webhook endpoint answered a redirect; redirects are not followed, so this batch is dropped: configure the final URL"
                );
                return;
            }
            Ok(response) => format!("status {}", response.status()),
            // reqwest's error names the URL, which may carry a password.
            Err(error) => error.without_url().to_string(),
        };
        if started.elapsed() + backoff > RETRY_FOR {
            metrics.webhook(WebhookOutcome::Failure, 1);
            shown("failed");
            tracing::warn!(
                app_id,
                url = %shown_url,
                attempt,
                problem,
                "Webhook dropped after retrying for 5 minutes"
            );
            return;
        }
        metrics.webhook(WebhookOutcome::Retry, 1);
        shown("retry");
        tracing::debug!(app_id, url = %shown_url, attempt, problem, retry_in = ?backoff, "Webhook delivery failed");
        backoff = flush.wait_out(backoff).await;
        attempt += 1;
    }
}
