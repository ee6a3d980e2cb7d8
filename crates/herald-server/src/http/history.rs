//! `GET /apps/{id}/channels/{channel}/events`: the channel's last events with their
//! serials, from the node's history (see [`crate::history`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use herald_protocol::channel::validate_channel_name;
use herald_protocol::history::{HistoryPage, DEFAULT_LIMIT, MAX_LIMIT};

use herald_protocol::signing::SignedQuery;

use super::auth::Authenticated;
use super::error::ApiError;
use crate::history::{HistoryError, Query};
use crate::shared::Shared;

/// `GET /apps/{app_id}/channels/{channel_name}/events?limit=&before=&after=`.
pub(crate) async fn events(
    State(shared): State<Arc<Shared>>,
    Path((_app_id, channel)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<HistoryPage>, ApiError> {
    validate_channel_name(&channel, auth.app.config().limits.max_channel_name_length)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let query = parse_query(&auth.query)?;
    shared
        .adapter
        .history
        .page(&auth.app, &channel, query)
        .await
        .map(Json)
        .map_err(|e| match e {
            HistoryError::Off => ApiError::not_found(e.to_string()),
            HistoryError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        })
}

fn parse_query(query: &SignedQuery) -> Result<Query, ApiError> {
    let serial = |name: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("'{name}' must be a serial (a whole number)"))
                })
            })
            .transpose()
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("'limit' must be between 1 and {MAX_LIMIT}"))
            })?,
    };
    Ok(Query {
        limit,
        before: serial("before")?,
        after: serial("after")?,
    })
}
