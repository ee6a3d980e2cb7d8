//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`: validate, encode each
//! event once per channel, and hand the shared bytes to the hub.
//!
//! A request is validated whole before anything is published, so a batch with one bad item
//! publishes nothing. `data` is passed through byte for byte: the JSON string token from the
//! request body becomes the `data` token of the frame subscribers receive.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use herald_protocol::channel::{
    is_cache_channel, is_valid_socket_id, validate_channel_name, validate_event_name, ChannelKind,
};
use herald_protocol::frame;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::auth::Authenticated;
use super::error::ApiError;
use crate::apps::App;
use crate::ids::SocketId;
use crate::shared::Shared;
use crate::wire::text_frame;

#[derive(Deserialize)]
struct EventBody<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Capped<String>>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Capped<EventBody<'a>>>,
}

/// Arrays in a request body stop being read past this many items: the app's own limits
/// (100 channels, 10 events by default) are checked afterwards with exact counts, and this
/// keeps a 4 MB body of `{},{},…` from becoming a million parsed events first.
const MAX_ITEMS: usize = 10_000;

/// A `Vec` whose deserialisation fails past [`MAX_ITEMS`] items.
struct Capped<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Capped<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Capped<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_ITEMS} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX_ITEMS {
                        return Err(serde::de::Error::custom(format!(
                            "an array of more than {MAX_ITEMS} items"
                        )));
                    }
                    items.push(item);
                }
                Ok(Capped(items))
            }
        }
        deserializer.deserialize_seq(Visitor(std::marker::PhantomData))
    }
}

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

/// One validated event, ready to publish.
struct Prepared {
    name: String,
    /// The `data` JSON token to insert verbatim in each frame.
    data_token: String,
    channels: Vec<String>,
    /// The socket the publisher excluded, if it names one this server could have made.
    except: Option<SocketId>,
    /// The excluded socket as given, for the console.
    except_socket: Option<String>,
    info: InfoWanted,
}

fn prepare(app: &App, body: EventBody<'_>) -> Result<Prepared, ApiError> {
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
        (raw.to_owned(), text.len())
    } else {
        // Pusher's API takes `data` as a string; an object is accepted and sent as its JSON
        // text so subscribers still receive a string.
        (frame::json_str(raw), raw.len())
    };
    if size > limits.max_event_data_bytes {
        return Err(ApiError::too_large(format!(
            "The data content of this event exceeds the allowed maximum ({} bytes): it is {size} bytes",
            limits.max_event_data_bytes
        )));
    }
    let channels = match (body.channels.map(|c| c.0), body.channel) {
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
        name: name.into_owned(),
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
async fn publish(shared: &Shared, app: &Arc<App>, event: &Prepared) -> u64 {
    app.metrics.console.emit("api_publish", |row| {
        row.insert("channels".into(), event.channels.clone().into());
        row.insert("event".into(), event.name.clone().into());
        row.insert("socket_id".into(), event.except_socket.clone().into());
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
async fn count_messages(shared: &Shared, app: &App, messages: u64, events: &[Prepared]) {
    if app.config().limits.messages_per_day == 0 {
        return;
    }
    let channels: Vec<&str> = events
        .iter()
        .flat_map(|e| e.channels.iter().map(String::as_str))
        .collect();
    shared
        .adapter
        .limits
        .count_messages(app, messages, &channels)
        .await;
}

/// The counts the publisher asked for with `info`, per channel.
async fn info_attributes(
    shared: &Shared,
    app: &App,
    event: &Prepared,
) -> Result<Map<String, Value>, ApiError> {
    let mut attributes = Map::new();
    for channel in &event.channels {
        let counts = shared.adapter.presence.counts(app, channel).await?;
        let mut attrs = Map::new();
        if event.info.user_count && ChannelKind::of(channel).is_presence() {
            attrs.insert("user_count".into(), counts.user_count.into());
        }
        if event.info.subscription_count {
            attrs.insert(
                "subscription_count".into(),
                counts.subscription_count.into(),
            );
        }
        attributes.insert(channel.clone(), Value::Object(attrs));
    }
    Ok(attributes)
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
) -> Result<Json<Value>, ApiError> {
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
) -> Result<Value, ApiError> {
    let event = prepare(app, parse_body(body)?)?;
    check_daily_quota(shared, app, client).await?;
    let messages = publish(shared, app, &event).await;
    count_messages(shared, app, messages, std::slice::from_ref(&event)).await;
    if event.info.any() {
        let attributes = info_attributes(shared, app, &event).await?;
        Ok(serde_json::json!({ "channels": attributes }))
    } else {
        Ok(Value::Object(Map::new()))
    }
}

/// `POST /apps/{app_id}/batch_events`.
pub(crate) async fn batch(
    State(shared): State<Arc<Shared>>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let batch: BatchBody<'_> = parse_body(&auth.body)?;
    let items = batch
        .batch
        .ok_or_else(|| ApiError::bad_request("Missing 'batch': an array of events is required"))?
        .0;
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
    let mut results = Vec::with_capacity(prepared.len());
    let mut messages = 0;
    for event in &prepared {
        messages += publish(&shared, &auth.app, event).await;
    }
    count_messages(&shared, &auth.app, messages, &prepared).await;
    for event in prepared.iter().filter(|_| any_info) {
        let attributes = info_attributes(&shared, &auth.app, event).await?;
        // A batch item has one channel, so its attributes are that channel's.
        let attrs = attributes
            .into_iter()
            .next()
            .map_or(Value::Object(Map::new()), |(_, v)| v);
        results.push(attrs);
    }
    if any_info {
        Ok(Json(serde_json::json!({ "batch": results })))
    } else {
        Ok(Json(Value::Object(Map::new())))
    }
}
