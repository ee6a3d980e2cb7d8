//! The webhook queue's admin API, JSON behind [`super::guard`] (reads need the admin
//! token when one is set; writes also the `X-Herald-Console` header, which
//! `herald webhooks` and the console send):
//!
//! - `GET /api/webhooks/{app}?state=pending|dead&endpoint=URL&after=ID&limit=N`: a page of
//!   the app's batches, oldest first, at most [`MAX_PAGE`], and the cursor of the next;
//! - `GET /api/webhooks/{app}/{id}`: one batch with its body;
//! - `POST /api/webhooks/{app}/{id}/retry`: a dead letter made pending and sent now;
//! - `POST /api/webhooks/{app}/retry?endpoint=URL`: every dead letter of the app (or of one
//!   endpoint);
//! - `POST /api/webhooks/{app}/purge?endpoint=URL&pending=true`: the dead letters removed,
//!   and the pending batches too only with `pending=true`.
//!
//! The console calls the same routes under `/console/api/webhooks/`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Need;
use crate::shared::Shared;
use crate::webhooks::{ToolError, Webhooks, Which, MAX_PAGE};

/// The queue's routes.
/// Served twice: at `/api/webhooks/` and at `/console/api/webhooks/`, where the console's
/// cookie (its path is `/console`) reaches them.
pub(crate) fn router() -> Router<Arc<Shared>> {
    let mut router = Router::new();
    for root in ["/api/webhooks", "/console/api/webhooks"] {
        router = router
            .route(&format!("{root}/{{app}}"), get(list))
            .route(&format!("{root}/{{app}}/retry"), post(retry_all))
            .route(&format!("{root}/{{app}}/purge"), post(purge))
            .route(&format!("{root}/{{app}}/{{id}}"), get(show))
            .route(&format!("{root}/{{app}}/{{id}}/retry"), post(retry_one));
    }
    router
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<crate::webhooks::State>,
    endpoint: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct EndpointQuery {
    endpoint: Option<String>,
    #[serde(default)]
    pending: bool,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn failed(e: ToolError) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The app's queue, after the guard's check; an answer when there is none.
fn queue(
    shared: &Shared,
    headers: &HeaderMap,
    need: Need,
    app: &str,
) -> Result<Arc<Webhooks>, Box<Response>> {
    shared
        .admin
        .guard
        .authorize(headers, need)
        .map_err(|denied| Box::new(denied.into_response()))?;
    let Some(found) = shared.apps.by_id(app) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("Unknown app id '{app}'"),
        )));
    };
    found.webhooks().ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            format!("App '{app}' has no webhook endpoints, so no webhook queue"),
        ))
    })
}

/// The app's queue and the batch id of the path.
fn batch(
    shared: &Shared,
    headers: &HeaderMap,
    need: Need,
    app: &str,
    id: &str,
) -> Result<(Arc<Webhooks>, u64), Box<Response>> {
    let webhooks = queue(shared, headers, need, app)?;
    let id = id.parse().map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("'{id}' is not a batch id (the X-Herald-Webhook-Id, a number)"),
        ))
    })?;
    Ok((webhooks, id))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let webhooks = match queue(&shared, &headers, Need::Read, &app) {
        Ok(w) => w,
        Err(answer) => return *answer,
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "Query: state=pending|dead, endpoint=URL, after=ID, limit=N".into(),
        );
    };
    let which = Which {
        endpoint: query.endpoint,
        state: query.state,
    };
    let limit = query.limit.unwrap_or(MAX_PAGE);
    match webhooks.list(which, query.after, limit).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => failed(e),
    }
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (webhooks, id) = match batch(&shared, &headers, Need::Read, &app, &id) {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    match webhooks.show(id).await {
        Ok(Some(shown)) => Json(shown).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("No batch {id} of app '{app}' in the webhook queue"),
        ),
        Err(e) => failed(e),
    }
}

async fn retry_one(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (webhooks, id) = match batch(&shared, &headers, Need::Write, &app, &id) {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    match webhooks.retry(Which::default(), Some(id)).await {
        Ok(ids) if ids.is_empty() => error(
            StatusCode::NOT_FOUND,
            format!("No dead letter {id} of app '{app}' (only dead letters are retried)"),
        ),
        Ok(ids) => retried(&ids),
        Err(e) => failed(e),
    }
}

fn retried(ids: &[u64]) -> Response {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    Json(json!({ "retried": ids })).into_response()
}

/// What a write to all of an app's batches does.
#[derive(Clone, Copy)]
enum Bulk {
    Retry,
    Purge,
}

async fn retry_all(
    state: State<Arc<Shared>>,
    app: Path<String>,
    query: Query<EndpointQuery>,
    headers: HeaderMap,
) -> Response {
    bulk(Bulk::Retry, state, app, query, headers).await
}

async fn purge(
    state: State<Arc<Shared>>,
    app: Path<String>,
    query: Query<EndpointQuery>,
    headers: HeaderMap,
) -> Response {
    bulk(Bulk::Purge, state, app, query, headers).await
}

async fn bulk(
    what: Bulk,
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    Query(query): Query<EndpointQuery>,
    headers: HeaderMap,
) -> Response {
    let webhooks = match queue(&shared, &headers, Need::Write, &app) {
        Ok(w) => w,
        Err(answer) => return *answer,
    };
    let which = Which {
        endpoint: query.endpoint,
        state: None,
    };
    let done = match what {
        Bulk::Retry => webhooks.retry(which, None).await.map(|ids| retried(&ids)),
        Bulk::Purge => webhooks
            .purge(which, query.pending)
            .await
            .map(|n| Json(json!({ "purged": n })).into_response()),
    };
    done.unwrap_or_else(failed)
}
