//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`: validate, encode each
//! event once per channel, and hand the shared bytes to the hub.
//!
//! A request is validated whole before anything is published, so a batch with one bad item
//! publishes nothing. `data` is passed through byte for byte: the JSON string token from the
//! request body becomes the `data` token of the frame subscribers receive.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use herald_protocol::api::{BatchAnswer, BatchBody, ChannelAttributes, TriggerAnswer, TriggerBody};
use herald_protocol::channel::{
    is_cache_channel, is_valid_socket_id, validate_channel_name, validate_event_name, ChannelKind,
};
use herald_protocol::frame;
use serde::Deserialize;

use super::auth::Authenticated;
use super::error::ApiError;
use crate::apps::App;
use crate::hub::ChannelCounts;
use crate::ids::SocketId;
use crate::shared::Shared;
use crate::wire::text_frame;

#[derive(Debug, Clone, Copy, Default)]
struct InfoWanted {
    user_count: bool,
    subscription_count: bool,
}

impl InfoWanted {
    fn any(self) -> bool {
        self.user_count || self.subscription_count
    }
}

/// Parses an `info` list, rejecting attributes Herald does not know.
pub(super) fn parse_info(info: Option<&str>, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for attr in info.unwrap_or("").split(',').map(str::trim) {
        if attr.is_empty() {
            continue;
        }
        if !allowed.contains(&attr) {
            return Err(ApiError::bad_request(format!(
                "Unknown info attribute '{attr}' (expected one of: {})",
                allowed.join(", ")
            )));
        }
        out.push(attr.to_owned());
    }
    Ok(out)
}

/// One validated event, ready to publish, borrowing from the request body where it can.
struct Prepared<'a> {
    name: Cow<'a, str>,
    /// The `data` JSON token to insert verbatim in each frame.
    data_token: Cow<'a, str>,
    channels: Vec<Cow<'a, str>>,
    /// The socket the publisher excluded, if it names one this server could have made.
    except: Option<SocketId>,
    /// The excluded socket as given, for the console.
    except_socket: Option<Cow<'a, str>>,
    info: InfoWanted,
}

fn prepare<'a>(app: &App, body: TriggerBody<'a>) -> Result<Prepared<'a>, ApiError> {
    let limits = app.config().limits;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad_request("Missing 'name': the event name is required"))?;
    validate_event_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let data = body
        .data
        .ok_or_else(|| ApiError::bad_request("Missing 'data': the event data is required"))?;
    let raw = data.get();
    let (data_token, size) = if raw.starts_with('"') {
        let text: Cow<'_, str> = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("Invalid 'data': {e}")))?;
        (Cow::Borrowed(raw), text.len())
    } else {
        // Pusher's API takes `data` as a string; an object is accepted and sent as its JSON
        // text so subscribers still receive a string.
        (Cow::Owned(frame::json_str(raw)), raw.len())
    };
    if size > limits.max_event_data_bytes {
        return Err(ApiError::too_large(format!(
            "The data content of this event exceeds the allowed maximum ({} bytes): it is {size} bytes",
            limits.max_event_data_bytes
        )));
    }
    let channels = match (body.channels, body.channel) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give either 'channel' or 'channels', not both",
            ))
        }
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        (None, None) => {
            return Err(ApiError::bad_request(
                "Missing 'channels' (or 'channel'): at least one channel is required",
            ))
        }
    };
    if channels.is_empty() {
        return Err(ApiError::bad_request("'channels' must not be empty"));
    }
    if channels.len() > limits.max_channels_per_trigger {
        return Err(ApiError::bad_request(format!(
            "Too many channels: {} given, at most {} allowed per event",
            channels.len(),
            limits.max_channels_per_trigger
        )));
    }
    for channel in &channels {
        validate_channel_name(channel, limits.max_channel_name_length)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let except = match body.socket_id.as_deref() {
        None => None,
        Some(id) if is_valid_socket_id(id) => SocketId::parse(id),
        Some(id) => {
            return Err(ApiError::bad_request(format!(
                "Invalid socket_id: '{id}' (expected digits.digits)"
            )))
        }
    };
    let mut info = InfoWanted::default();
    for attr in parse_info(body.info.as_deref(), &["user_count", "subscription_count"])? {
        match attr.as_str() {
            "user_count" => info.user_count = true,
            _ => info.subscription_count = true,
        }
    }
    Ok(Prepared {
        name,
        data_token,
        channels,
        except,
        except_socket: body.socket_id,
        info,
    })
}

/// Refuses a publish once the app (the cluster, if any) has used its daily message quota.
async fn check_daily_quota(
    shared: &Shared,
    app: &App,
    client: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    let config = app.config();
    let limit = config.limits.messages_per_day;
    if limit == 0 || !shared.adapter.limits.quota_exhausted(app).await {
        return Ok(());
    }
    app.metrics
        .refused(crate::metrics::Limit::DailyMessages, &config.id, client);
    Err(ApiError::forbidden(format!(
        "Over the daily message quota: {} allows {limit} messages per day",
        config.limits_holder()
    )))
}

/// Delivers an event; returns the messages it counts for the daily quota. On a cache
/// channel it returns once the event is kept for later subscribers (in a cluster, once
/// the cluster's shared state has it, or after the backend's bound).
async fn publish(shared: &Shared, app: &Arc<App>, event: &Prepared<'_>) -> u64 {
    app.metrics.console.emit("api_publish", |row| {
        let channels: Vec<&str> = event.channels.iter().map(|c| c.as_ref()).collect();
        row.insert("channels".into(), channels.into());
        row.insert("event".into(), event.name.as_ref().into());
        row.insert("socket_id".into(), event.except_socket.as_deref().into());
        // String data is shown as the text the clients get, not as its JSON token.
        let text = serde_json::from_str::<String>(&event.data_token);
        crate::console::preview(row, text.as_deref().unwrap_or(&event.data_token));
    });
    let broker = &shared.adapter.broker;
    let mut messages = 0u64;
    for channel in &event.channels {
        let frame = text_frame(&frame::event(&event.name, channel, &event.data_token, None));
        let delivered = if is_cache_channel(channel) {
            broker
                .publish_cached(app, channel, &frame, &event.data_token, event.except)
                .delivered()
                .await
        } else {
            broker
                .publish_ordered(app, channel, &frame, event.except)
                .delivered()
                .await
        };
        messages += 1 + delivered as u64;
        app.metrics
            .events_published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    messages
}

/// Counts delivered messages against the daily quota: this node's deliveries, and in a
/// cluster every node's subscribers of the channels published to.
async fn count_messages(shared: &Shared, app: &App, messages: u64, events: &[Prepared<'_>]) {
    if app.config().limits.messages_per_day == 0 {
        return;
    }
    let channels: Vec<&str> = events
        .iter()
        .flat_map(|e| e.channels.iter().map(|c| c.as_ref()))
        .collect();
    shared
        .adapter
        .limits
        .count_messages(app, messages, &channels)
        .await;
}

/// The counts the publisher asked for with `info`, of one channel.
fn attributes(info: InfoWanted, channel: &str, counts: ChannelCounts) -> ChannelAttributes {
    let mut attrs = ChannelAttributes::default();
    if info.user_count && ChannelKind::of(channel).is_presence() {
        attrs.user_count = Some(counts.user_count as u64);
    }
    if info.subscription_count {
        attrs.subscription_count = Some(counts.subscription_count as u64);
    }
    attrs
}

/// The counts the publisher asked for with `info`, per channel.
async fn info_attributes(
    shared: &Shared,
    app: &App,
    event: &Prepared<'_>,
) -> Result<BTreeMap<String, ChannelAttributes>, ApiError> {
    let mut per_channel = BTreeMap::new();
    for channel in &event.channels {
        let counts = shared.adapter.presence.counts(app, channel).await?;
        per_channel.insert(
            channel.as_ref().to_owned(),
            attributes(event.info, channel, counts),
        );
    }
    Ok(per_channel)
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "Request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

/// `POST /apps/{app_id}/events`.
pub(crate) async fn trigger(
    State(shared): State<Arc<Shared>>,
    auth: Authenticated,
) -> Result<Json<TriggerAnswer>, ApiError> {
    trigger_body(&shared, &auth.app, &auth.body, auth.client)
        .await
        .map(Json)
}

/// A trigger's body published for `app`, signature already checked: the HTTP API's path,
/// which the console's event creator takes too.
pub(crate) async fn trigger_body(
    shared: &Shared,
    app: &Arc<App>,
    body: &[u8],
    client: Option<std::net::IpAddr>,
) -> Result<TriggerAnswer, ApiError> {
    let event = prepare(app, parse_body(body)?)?;
    check_daily_quota(shared, app, client).await?;
    let messages = publish(shared, app, &event).await;
    count_messages(shared, app, messages, std::slice::from_ref(&event)).await;
    let mut answer = TriggerAnswer::default();
    if event.info.any() {
        answer.channels = info_attributes(shared, app, &event).await?;
    }
    Ok(answer)
}

/// `POST /apps/{app_id}/batch_events`.
pub(crate) async fn batch(
    State(shared): State<Arc<Shared>>,
    auth: Authenticated,
) -> Result<Json<BatchAnswer>, ApiError> {
    let batch: BatchBody<'_> = parse_body(&auth.body)?;
    let items = batch
        .batch
        .ok_or_else(|| ApiError::bad_request("Missing 'batch': an array of events is required"))?;
    let max = auth.app.config().limits.max_events_per_batch;
    if items.len() > max {
        return Err(ApiError::bad_request(format!(
            "Batch too large: {} events given, at most {max} allowed",
            items.len()
        )));
    }
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if item.channels.is_some() {
            return Err(ApiError::bad_request(format!(
                "batch[{i}]: each batch event takes a single 'channel'"
            )));
        }
        let event = prepare(&auth.app, item).map_err(|e| ApiError {
            message: format!("batch[{i}]: {}", e.message),
            ..e
        })?;
        prepared.push(event);
    }
    check_daily_quota(&shared, &auth.app, auth.client).await?;
    let any_info = prepared.iter().any(|e| e.info.any());
    let mut messages = 0;
    for event in &prepared {
        messages += publish(&shared, &auth.app, event).await;
    }
    count_messages(&shared, &auth.app, messages, &prepared).await;
    let mut answer = BatchAnswer::default();
    for event in prepared.iter().filter(|_| any_info) {
        // A batch item has one channel (prepare checked), so its attributes are that
        // channel's.
        let mut attrs = ChannelAttributes::default();
        if let Some(channel) = event.channels.first() {
            let counts = shared.adapter.presence.counts(&auth.app, channel).await?;
            attrs = attributes(event.info, channel, counts);
        }
        answer.batch.push(attrs);
    }
    Ok(Json(answer))
}
