//! `GET /apps/{id}/channels`, `/channels/{name}` and `/channels/{name}/users`: what is
//! occupied, with subscription and user counts, answered by the adapter (the hub's, or the
//! cluster's).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use herald_protocol::api::{
    ChannelAnswer, ChannelAttributes, ChannelsAnswer, UserEntry, UsersAnswer,
};
use herald_protocol::channel::{is_cache_channel, validate_channel_name, ChannelKind};
use serde_json::{json, Value};

use super::auth::Authenticated;
use super::error::ApiError;
use super::events::parse_info;
use crate::shared::Shared;

/// `GET /apps/{app_id}/channels`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    auth: Authenticated,
) -> Result<Json<ChannelsAnswer>, ApiError> {
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
    let occupied = shared.adapter.presence.channels(&auth.app, prefix).await?;
    let mut answer = ChannelsAnswer::default();
    for (name, counts) in occupied {
        let mut attrs = ChannelAttributes::default();
        if user_count {
            attrs.user_count = Some(counts.user_count as u64);
        }
        if subscription_count {
            attrs.subscription_count = Some(counts.subscription_count as u64);
        }
        answer.channels.insert(name, attrs);
    }
    Ok(Json(answer))
}

fn checked_channel(name: &str, max_len: usize) -> Result<ChannelKind, ApiError> {
    validate_channel_name(name, max_len).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /apps/{app_id}/channels/{channel_name}`.
pub(crate) async fn show(
    State(shared): State<Arc<Shared>>,
    Path((_app_id, channel)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<ChannelAnswer>, ApiError> {
    let kind = checked_channel(&channel, auth.app.config().limits.max_channel_name_length)?;
    let info = parse_info(
        auth.query.get("info"),
        &["user_count", "subscription_count", "cache"],
    )?;
    let presence = &shared.adapter.presence;
    let counts = presence.counts(&auth.app, &channel).await?;
    let mut answer = ChannelAnswer::default();
    answer.occupied = counts.subscription_count > 0;
    for attr in info {
        if attr == "user_count" {
            if !kind.is_presence() {
                return Err(ApiError::bad_request(format!(
                    "user_count is only available for presence channels, not '{channel}'"
                )));
            }
            answer.user_count = Some(counts.user_count as u64);
        } else if attr == "cache" {
            if !is_cache_channel(&channel) {
                return Err(ApiError::bad_request(format!(
                    "cache is only available for cache channels, not '{channel}'"
                )));
            }
            let cached = presence.cached(&auth.app, &channel).await?.map(|c| {
                let data: Value = serde_json::from_str(&c.data).unwrap_or(Value::Null);
                json!({ "data": data, "ttl": c.ttl.as_secs() })
            });
            answer.cache = Some(cached.unwrap_or(Value::Null));
        } else {
            answer.subscription_count = Some(counts.subscription_count as u64);
        }
    }
    Ok(Json(answer))
}

/// `GET /apps/{app_id}/channels/{channel_name}/users`.
pub(crate) async fn users(
    State(shared): State<Arc<Shared>>,
    Path((_app_id, channel)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<UsersAnswer>, ApiError> {
    let kind = checked_channel(&channel, auth.app.config().limits.max_channel_name_length)?;
    if !kind.is_presence() {
        return Err(ApiError::bad_request(format!(
            "Users can only be listed for presence channels, not '{channel}'"
        )));
    }
    let ids = shared.adapter.presence.users(&auth.app, &channel).await?;
    let mut answer = UsersAnswer::default();
    answer.users = ids.into_iter().map(UserEntry::new).collect();
    Ok(Json(answer))
}
