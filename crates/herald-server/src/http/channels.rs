//! `GET /apps/{id}/channels`, `/channels/{name}` and `/channels/{name}/users`: what is
//! occupied, with subscription and user counts, answered from the hub.

use axum::extract::Path;
use axum::Json;
use herald_protocol::channel::{is_cache_channel, validate_channel_name, ChannelKind};
use serde_json::{json, Map, Value};

use super::auth::Authenticated;
use super::error::ApiError;
use super::events::parse_info;
use crate::apps::App;
use crate::hub::ChannelCounts;

/// `GET /apps/{app_id}/channels`.
pub(crate) async fn list(auth: Authenticated) -> Result<Json<Value>, ApiError> {
    let prefix = auth.query.get("filter_by_prefix").unwrap_or("");
    let info = parse_info(
        auth.query.get("info"),
        &["user_count", "subscription_count"],
    )?;
    let user_count = info.iter().any(|a| a == "user_count");
    let subscription_count = info.iter().any(|a| a == "subscription_count");
    if user_count && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request(
            "user_count is only available for presence channels: add filter_by_prefix=presence-",
        ));
    }
    let occupied = match auth.app.cluster() {
        Some(cluster) => cluster
            .channels(auth.app.id(), prefix)
            .await
            .map_err(|e| ApiError::cluster(&e))?,
        None => auth.app.hub.channels(prefix),
    };
    let mut channels = Map::new();
    for (name, counts) in occupied {
        let mut attrs = Map::new();
        if user_count {
            attrs.insert("user_count".into(), counts.user_count.into());
        }
        if subscription_count {
            attrs.insert(
                "subscription_count".into(),
                counts.subscription_count.into(),
            );
        }
        channels.insert(name, Value::Object(attrs));
    }
    Ok(Json(json!({ "channels": channels })))
}

/// A channel's counts: this node's, or the cluster's when there is one.
pub(super) async fn counts(app: &App, channel: &str) -> Result<ChannelCounts, ApiError> {
    match app.cluster() {
        Some(cluster) => cluster
            .counts(app.id(), channel)
            .await
            .map_err(|e| ApiError::cluster(&e)),
        None => Ok(app.hub.counts(channel)),
    }
}

fn checked_channel(name: &str, max_len: usize) -> Result<ChannelKind, ApiError> {
    validate_channel_name(name, max_len).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /apps/{app_id}/channels/{channel_name}`.
pub(crate) async fn show(
    Path((_app_id, channel)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let kind = checked_channel(&channel, auth.app.config().limits.max_channel_name_length)?;
    let info = parse_info(
        auth.query.get("info"),
        &["user_count", "subscription_count", "cache"],
    )?;
    let counts = counts(&auth.app, &channel).await?;
    let mut out = Map::new();
    out.insert("occupied".into(), (counts.subscription_count > 0).into());
    for attr in info {
        if attr == "user_count" {
            if !kind.is_presence() {
                return Err(ApiError::bad_request(format!(
                    "user_count is only available for presence channels, not '{channel}'"
                )));
            }
            out.insert(attr, counts.user_count.into());
        } else if attr == "cache" {
            if !is_cache_channel(&channel) {
                return Err(ApiError::bad_request(format!(
                    "cache is only available for cache channels, not '{channel}'"
                )));
            }
            let mut cached = auth.app.cache.get(&channel).map(|c| (c.data, c.ttl));
            if let (None, Some(cluster)) = (&cached, auth.app.cluster()) {
                cached = cluster
                    .cached(auth.app.id(), &channel)
                    .await
                    .map_err(|e| ApiError::cluster(&e))?
                    .map(|(_, data, ttl)| (data.into_boxed_str(), ttl));
            }
            let cached = cached.map(|(data, ttl)| {
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                json!({ "data": data, "ttl": ttl.as_secs() })
            });
            out.insert(attr, cached.unwrap_or(Value::Null));
        } else {
            out.insert(attr, counts.subscription_count.into());
        }
    }
    Ok(Json(Value::Object(out)))
}

/// `GET /apps/{app_id}/channels/{channel_name}/users`.
pub(crate) async fn users(
    Path((_app_id, channel)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let kind = checked_channel(&channel, auth.app.config().limits.max_channel_name_length)?;
    if !kind.is_presence() {
        return Err(ApiError::bad_request(format!(
            "Users can only be listed for presence channels, not '{channel}'"
        )));
    }
    let ids = match auth.app.cluster() {
        Some(cluster) => cluster
            .users(auth.app.id(), &channel)
            .await
            .map_err(|e| ApiError::cluster(&e))?,
        None => auth.app.hub.users(&channel),
    };
    let users: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(Json(json!({ "users": users })))
}
