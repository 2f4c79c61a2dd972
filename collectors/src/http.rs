//! The HTTP intake sources: `POST /v1/signals` (a JSON signal or JSON
//! lines, contract section 2) and `POST /v1/alertmanager` (webhook version
//! 4). Each answers once the valid signals are journaled: 202 with counts,
//! 400 with a reason per bad line or alert (the valid ones around them
//! still count), 429 when the decider's queue is full, 503 when the
//! journal did not take them.
//!
//! The service mounts these routes under `/v1` behind its auth layer.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use remedy_engine::Signal;
use serde_json::json;

use crate::intake::{Intake, IntakeError, Reporter};

/// How long a request waits for its signals to be journaled.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone)]
struct Sources {
    intake: Intake,
    report: Reporter,
}

/// `/signals` and `/alertmanager`, delivering to `intake`.
pub fn routes(intake: Intake, report: Reporter) -> Router {
    Router::new()
        .route("/signals", post(signals))
        .route("/alertmanager", post(alertmanager))
        .with_state(Sources { intake, report })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Line errors a 400 lists at most; then how many more there were.
pub const MAX_ERRORS: usize = 100;

/// Bad lines or alerts, each with its reason: at most [`MAX_ERRORS`] kept,
/// the rest only counted (an 8 MiB body of bad lines gets a short answer).
#[derive(Default)]
struct Errors {
    listed: Vec<serde_json::Value>,
    total: usize,
}

impl Errors {
    fn push(&mut self, error: impl FnOnce() -> serde_json::Value) {
        self.total += 1;
        if self.listed.len() < MAX_ERRORS {
            self.listed.push(error());
        }
    }

    /// The answer's body: counts, the errors listed, and how many more.
    fn body(self, accepted: usize) -> serde_json::Value {
        let mut body = json!({ "accepted": accepted, "rejected": self.total });
        if self.total > 0 {
            body["errors"] = serde_json::Value::Array(self.listed);
        }
        if self.total > MAX_ERRORS {
            body["more_errors"] = json!(self.total - MAX_ERRORS);
        }
        body
    }
}

/// One JSON object, or JSON lines: every valid signal is decided; bad lines
/// are listed with their reasons (400), the valid ones around them still
/// count. Each line is judged alone: one that is not UTF-8 is one bad line.
async fn signals(State(s): State<Sources>, body: Bytes) -> Response {
    let mut valid = Vec::new();
    let mut errors = Errors::default();
    let admitted = |signal| s.intake.admit(&signal).map(|()| signal);
    let whole = std::str::from_utf8(&body)
        .ok()
        .map(|text| Signal::from_json(text.trim()));
    match whole {
        Some(Ok(one)) => match admitted(one) {
            Ok(one) => valid.push(one),
            Err(e) => errors.push(|| json!({ "line": 1, "reason": e.to_string() })),
        },
        _ => {
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                match crate::lines::decode(line).and_then(admitted) {
                    Ok(sig) => valid.push(sig),
                    Err(e) => errors.push(|| json!({ "line": i + 1, "reason": e.to_string() })),
                }
            }
        }
    }
    let accepted = valid.len();
    s.report.received("http", accepted, errors.total);
    if let Err(r) = ingest(&s.intake, valid).await {
        return r;
    }
    let rejected = errors.total;
    if rejected == 0 && accepted == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send a JSON signal or JSON lines",
        );
    }
    let status = if rejected > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(errors.body(accepted))).into_response()
}

/// Hands signals to the decider and waits until they are journaled.
async fn ingest(intake: &Intake, signals: Vec<Signal>) -> Result<(), Response> {
    match intake.offer(signals, WAIT).await {
        Ok(_) => Ok(()),
        Err(IntakeError::Full) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, IntakeError::Full.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(r)
        }
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The Alertmanager webhook: each alert becomes a signal (contract section 2).
async fn alertmanager(State(s): State<Sources>, body: String) -> Response {
    let (decoded, mut skipped) = match crate::alertmanager::signals(&body) {
        Ok(v) => v,
        Err(e) => {
            s.report.received("alertmanager", 0, 1);
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    // The alerts' positions in the payload, skipping those already refused.
    let refused: std::collections::BTreeSet<usize> = skipped.iter().map(|k| k.index).collect();
    let positions = (0..).filter(|i| !refused.contains(i));
    let mut signals = Vec::with_capacity(decoded.len());
    for (index, signal) in positions.zip(decoded) {
        match s.intake.admit(&signal) {
            Ok(()) => signals.push(signal),
            Err(e) => skipped.push(crate::alertmanager::Skipped {
                index,
                reason: format!("{}: {e}", signal.r#type),
            }),
        }
    }
    let accepted = signals.len();
    s.report.received("alertmanager", accepted, skipped.len());
    if let Err(r) = ingest(&s.intake, signals).await {
        return r;
    }
    let status = if skipped.is_empty() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::BAD_REQUEST
    };
    skipped.sort_by_key(|k| k.index);
    let mut errors = Errors::default();
    for k in &skipped {
        errors.push(|| json!({ "alert": k.index, "reason": k.reason }));
    }
    (status, Json(errors.body(accepted))).into_response()
}
