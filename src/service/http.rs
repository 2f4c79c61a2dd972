//! The HTTP API (contract section 6): faults, decisions, silences,
//! approvals, health and metrics; the sources' intake routes
//! (`remedy_collectors::http`) are mounted beside them under `/v1`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::{Command, Shared};

type AppState = Arc<Shared>;

/// The API, with the sources' intake routes (`sources`) under `/v1` too.
pub(super) fn router(
    shared: Arc<Shared>,
    sources: Router,
    max_body: usize,
    body_within: std::time::Duration,
) -> Router {
    let v1 = Router::new()
        .route("/faults", get(faults))
        .route("/decisions", get(decisions))
        .route("/silences", get(silences).post(add_silence))
        .route("/silences/{id}", axum::routing::delete(delete_silence))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/holds", get(holds))
        .route("/rollouts", get(rollouts))
        .route("/rollouts/{class}/resume", post(resume_rollout))
        .route("/efficacy", get(efficacy))
        .route("/nodes/{node}", get(node))
        .route("/nodes/{node}/timeline", get(timeline))
        .route("/holds/{label}/{value}/release", post(release_hold))
        .with_state(shared.clone())
        .merge(sources)
        .layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .nest("/v1", v1)
        .layer(middleware::from_fn_with_state(
            (body_within, max_body),
            whole_body,
        ))
        .layer(DefaultBodyLimit::max(max_body))
}

/// Reads the whole body before the handler, within `limit` and `max`
/// bytes: a client sending a byte a second cannot hold a connection and a
/// request slot forever (408), one sending too much gets 413.
async fn whole_body(
    State((limit, max)): State<(std::time::Duration, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {limit:?}"),
        ),
        Ok(Err(_)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {max} bytes"),
        ),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Bearer auth on `/v1/*` when a token is set. The token is never logged.
async fn auth(State(s): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110 11.1).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if given != Some(token.as_str()) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

/// How long the decider may go without a command before `/readyz` calls
/// it stuck (it gets a tick every second).
const DECIDER_SILENT_MS: i64 = 10_000;

async fn readyz(State(s): State<AppState>) -> Response {
    let rules = s.rules_loaded.load(Ordering::Relaxed);
    let last_error = s.metrics.journal_error();
    // A database call blocks: off the async workers.
    let probe =
        tokio::task::block_in_place(|| s.reader.lock().map(|mut j| j.probe())).unwrap_or(false);
    let journal = probe && last_error.is_none();
    let mut body = json!({ "rules_loaded": rules, "journal_writable": journal });
    if s.leading {
        body["role"] = json!("leader");
    }
    if let Some(e) = last_error {
        body["journal_error"] = json!(e);
    }
    let collectors = s.metrics.collectors();
    if !collectors.is_empty() {
        body["collectors"] = json!(collectors);
    }
    if let Some(e) = s.metrics.reload_error() {
        body["last_reload_error"] = json!(e);
        body["rules_in_use"] = json!("the previous rules, which compiled");
    }
    // The clock ticks the decider every second: silent for long, it is stuck
    // (a rule that hangs, a file that blocks), and nothing is decided.
    let beat = s.metrics.last_beat();
    let stuck = beat > 0 && remedy_collectors::intake::now().0 - beat > DECIDER_SILENT_MS;
    body["decider"] = json!(if stuck { "stuck" } else { "ok" });
    let status = if rules && journal && !stuck {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct FaultQuery {
    state: Option<String>,
    node: Option<String>,
}

async fn faults(State(s): State<AppState>, Query(q): Query<FaultQuery>) -> Response {
    let open = match q.state.as_deref() {
        None => None,
        Some("open") => Some(true),
        Some("resolved") => Some(false),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state={other}: use open or resolved"),
            )
        }
    };
    match read(&s, |j| j.faults(open, q.node.as_deref())) {
        Ok(rows) => Json(rows).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Reads the journal through the readers' connection (off the async
/// workers: a database call blocks); an error is a 503.
fn read<T>(
    s: &Shared,
    f: impl FnOnce(&dyn super::journal::Journal) -> Result<T, super::journal::JournalError>,
) -> Result<T, Unavailable> {
    tokio::task::block_in_place(|| {
        let j = s
            .reader
            .lock()
            .map_err(|_| Unavailable("journal lock poisoned".into()))?;
        f(&**j).map_err(|e| Unavailable(e.to_string()))
    })
}

/// The journal could not be read: answered 503 with why.
struct Unavailable(String);

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        error(StatusCode::SERVICE_UNAVAILABLE, self.0)
    }
}

impl DecisionQuery {
    /// (since, limit), the limit at most 10,000.
    fn page(&self) -> (i64, usize) {
        (
            self.since.unwrap_or(0),
            self.limit.unwrap_or(1000).min(10_000),
        )
    }
}

#[derive(Deserialize)]
struct DecisionQuery {
    since: Option<i64>,
    limit: Option<usize>,
}

async fn decisions(State(s): State<AppState>, Query(q): Query<DecisionQuery>) -> Response {
    let (since, limit) = q.page();
    match read(&s, |j| j.decisions(since, limit)) {
        Ok(rows) => {
            let next = rows.last().map_or(since, |r| r.seq);
            Json(json!({ "decisions": rows, "next": next })).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let depth = s.tx.max_capacity() - s.tx.capacity();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(depth),
    )
        .into_response()
}

/// Asks the decider and waits for its answer.
async fn ask<T>(
    s: &Shared,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    if s.tx.send(command(reply)).await.is_err() {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    answer.await.map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the decider did not answer",
        )
    })
}

async fn silences(State(s): State<AppState>) -> Response {
    match ask(&s, Command::Silences).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

/// `{"node":..., "fault":..., "labels":{...}, "until":"RFC 3339", "comment":...}`.
async fn add_silence(State(s): State<AppState>, body: String) -> Response {
    let mut silence: remedy_actions::Silence = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a silence: {e}")),
    };
    silence.id = 0;
    if silence.matches_everything() {
        return error(
            StatusCode::BAD_REQUEST,
            "a silence with no node, fault or labels would silence the whole fleet: \
             give a matcher, or \"all\": true if that is meant",
        );
    }
    match ask(&s, |r| Command::Silence(silence, r)).await {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(r) => r,
    }
}

async fn delete_silence(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    match ask(&s, |r| Command::Unsilence(id, r)).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no silence {id}")),
        Err(r) => r,
    }
}

async fn approvals(State(s): State<AppState>) -> Response {
    match ask(&s, Command::Awaiting).await {
        Ok(list) => Json(
            list.into_iter()
                .map(|(id, i)| {
                    json!({ "id": id, "node": i.node, "fault": i.fault, "action": i.action, "asked_at": i.at })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/nodes/{node}`: labels, open faults, held actions, its domains' budgets.
async fn node(
    State(s): State<AppState>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Response {
    let name = node.clone();
    match ask(&s, |r| Command::Node(name, r)).await {
        Ok(Some(state)) => Json(state).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("node {node:?} is not known: it sent no signal (or was forgotten)"),
        ),
        Err(r) => r,
    }
}

/// `GET /v1/nodes/{node}/timeline?since=&limit=`: the decisions about the
/// node in time order (`remedy explain NODE --journal` adds its signals and
/// the rules' answers).
async fn timeline(
    State(s): State<AppState>,
    axum::extract::Path(node): axum::extract::Path<String>,
    Query(q): Query<DecisionQuery>,
) -> Response {
    let (since, limit) = q.page();
    match read(&s, |j| j.decisions_of(&node, since, limit)) {
        Ok(rows) if rows.is_empty() && since == 0 => error(
            StatusCode::NOT_FOUND,
            format!("node {node:?}: no decision about it in the journal"),
        ),
        Ok(rows) => {
            let next = rows.last().map_or(since, |r| r.seq);
            Json(json!({ "node": node, "decisions": rows, "next": next })).into_response()
        }
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct EfficacyQuery {
    /// Split by this node label (default: `[efficacy] by`).
    by: Option<String>,
}

/// `GET /v1/efficacy[?by=LABEL]`: the ledger from the journaled decisions,
/// as of now.
async fn efficacy(State(s): State<AppState>, Query(q): Query<EfficacyQuery>) -> Response {
    let by = q.by.or_else(|| s.efficacy_by.clone());
    let result = read(&s, |j| {
        crate::efficacy::of_journal(j, &s.policies, by.as_deref())
            .map(|ledger| ledger.rows_at(super::decider::now()))
    });
    match result {
        Ok(rows) => Json(rows).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /v1/rollouts`: per `[[node_class]]`, nodes converged, pending, in
/// progress (with their step), done, failed, whether the wave is halted
/// and why, its waves and window (contract 10).
async fn rollouts(State(s): State<AppState>) -> Response {
    match ask(&s, Command::Rollouts).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

/// `POST /v1/rollouts/{class}/resume`: an operator resumes a halted wave;
/// the node that stopped it is left as it is.
async fn resume_rollout(
    State(s): State<AppState>,
    axum::extract::Path(class): axum::extract::Path<String>,
) -> Response {
    let c = class.clone();
    match ask(&s, |r| Command::ResumeRollout(c, r)).await {
        Ok(Ok(true)) => Json(json!({ "class": class, "resumed": true })).into_response(),
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            format!(
                "the rollout of node_class {class:?} is not halted (or there is no such class)"
            ),
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(r) => r,
    }
}

/// The holds of open common causes (`[[correlate]] hold`).
async fn holds(State(s): State<AppState>) -> Response {
    match ask(&s, Command::Holds).await {
        Ok(list) => Json(
            list.into_iter()
                .map(|(label, value, fault)| {
                    json!({ "label": label, "value": value, "fault": fault,
                            "release": format!("POST /v1/holds/{label}/{value}/release") })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// An operator releases a hold: the repairs it held go on through the other guards.
async fn release_hold(
    State(s): State<AppState>,
    axum::extract::Path((label, value)): axum::extract::Path<(String, String)>,
) -> Response {
    let (l, v) = (label.clone(), value.clone());
    match ask(&s, |r| Command::ReleaseHold(l, v, r)).await {
        Ok(Ok(true)) => {
            Json(json!({ "label": label, "value": value, "released": true })).into_response()
        }
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            format!("no common cause holds {label} {value}"),
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(r) => r,
    }
}

async fn decide_approval(s: &Shared, id: u64, approve: bool) -> Response {
    match ask(s, |r| Command::Decide(id, approve, r)).await {
        Ok(Ok(true)) => Json(json!({ "id": id, "approved": approve })).into_response(),
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            format!("no action {id} awaits approval"),
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(r) => r,
    }
}

async fn approve(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    decide_approval(&s, id, true).await
}

async fn reject(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    decide_approval(&s, id, false).await
}

/// What a standby (`[ha]`, another instance leads) answers: alive, not
/// ready (`"role":"standby"`, so a Service routes to the leader only), and
/// 503 with Retry-After for everything else, POST /v1/* included: nothing
/// is taken in that the leader would not decide.
pub(super) fn standby_router(retry_after_secs: u64) -> Router {
    let busy = move || async move {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "standby: another instance leads (contract 12); send to the leader, or retry",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        );
        r
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "role": "standby" })),
                )
            }),
        )
        .fallback(busy)
}
