//! `http`: repair tickets and webhooks. Each job is one JSON request (POST by
//! default) to the configured URL: the job's JSON (see [`super::job_json`])
//! or, when `body` is given, that template with the job's values filled in.
//!
//! Guarantees:
//! - Deduplication: every request carries `Idempotency-Key:
//!   node/fault/opened-at` (the same for every retry of the same fault
//!   opening, also after a restart) and `X-Remedy-Dedup-Key: node/fault`
//!   (the same when the fault re-opens later), so a ticket system can
//!   ignore a repeat and update, rather than duplicate, the ticket of a
//!   fault that came back. `X-Remedy-Job-Id` names the job itself
//!   (node/fault/opened-at/action, `/recover` for an `on_resolve` action),
//!   for receivers that must tell a fault's actions apart: the
//!   Idempotency-Key, as the contract fixes it, is the same for every action
//!   of one fault opening.
//! - Retries: a 5xx or 429 answer, a connection error or an attempt that
//!   gets no answer in time is tried again after a backoff (doubling from
//!   `backoff`; longer when the answer's `Retry-After` asks for it), up to `retries` times, all within `timeout`; each attempt
//!   may use an equal share of the time left. Any other 4xx fails at once.
//!   Redirects are not followed: a 3xx fails with its status.
//! - A template renders to valid JSON whatever the values hold: every value
//!   is JSON-string-escaped, the template writes the quotes, and a template
//!   that is not JSON once filled in is refused when the executor is built.
//! - The bearer token (from `token_file` or `token_env`) and the values of
//!   configured headers never appear in Debug output, logs or errors; nor
//!   do the URL's user info and query, which are left out of every message.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use remedy_engine::{Backoff, Duration};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::{job_json, BoxFuture, ConfigError, ExecError, Executor, Job};

/// The header that names one opening of one fault on one node.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header that names a fault on a node, across re-openings.
const DEDUP_KEY: &str = "x-remedy-dedup-key";
/// The header that names the job: one action of one fault opening.
const JOB_ID: &str = "x-remedy-job-id";
/// Response bodies are read up to this size; the rest is ignored.
const MAX_RESPONSE: usize = 64 * 1024;

/// `[actions.NAME] executor = "http"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to send the request: an `http://` or `https://` URL.
    pub url: String,
    /// POST, PUT or PATCH. Default POST.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers sent with every request, e.g. `{ "X-Team" = "infra" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON document with placeholders (`{{node}}`, `{{fault}}`,
    /// `{{action}}`, `{{reason}}`, `{{opened}}`, `{{ts}}`, `{{id}}`,
    /// `{{dedup_key}}`, `{{labels.NAME}}`), written inside quotes; `{{`
    /// always opens a placeholder. A label the node lacks is empty. Default:
    /// the job's JSON.
    #[serde(default)]
    pub body: Option<String>,
    /// A file holding the bearer token (read when the executor is built,
    /// surrounding whitespace trimmed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token (instead of `token_file`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Longest a job may take, retries and backoff included. Default 30s.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Further attempts after a 5xx, 429, connection error or an attempt
    /// without an answer. Default 3.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, doubled before each next one. Default 500ms.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
}

fn default_method() -> String {
    "POST".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_retries() -> u32 {
    3
}

fn default_backoff() -> Duration {
    Duration(500)
}

impl Config {
    /// A configuration with the defaults, sending to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Config {
            url: url.into(),
            method: default_method(),
            headers: BTreeMap::new(),
            body: None,
            token_file: None,
            token_env: None,
            timeout: default_timeout(),
            retries: default_retries(),
            backoff: default_backoff(),
        }
    }
}

impl std::fmt::Debug for Config {
    /// Header values may be credentials: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &shown_url_text(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &self.body.is_some())
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// The `http` executor.
pub struct Http {
    action: String,
    config: Config,
    client: reqwest::Client,
    method: Method,
    url: Url,
    /// The URL as messages show it: without user info, query or fragment.
    shown: String,
    template: Option<Template>,
    /// Configured headers, `Content-Type` and the token: the same for every job.
    headers: HeaderMap,
}

impl std::fmt::Debug for Http {
    /// Neither the token nor header values: only what they are and where from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("action", &self.action)
            .field("method", &self.method)
            .field("url", &self.shown)
            .field("config", &self.config)
            .finish()
    }
}

impl Http {
    /// Checks the URL, method, headers and template, reads the token and
    /// builds the client; the error names the key at fault.
    pub fn new(action: &str, config: Config) -> Result<Self, ConfigError> {
        Self::build(action, config, true)
    }

    /// `new`, reading the token (`secrets`) or not (a check at load).
    fn build(action: &str, config: Config, secrets: bool) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::new(action, message);
        let url = parse_url(&config.url).map_err(|why| err(format!("url: {why}")))?;
        let method = match config.method.to_ascii_uppercase().as_str() {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            _ => {
                return Err(err(format!(
                    "method {:?}: expected POST, PUT or PATCH",
                    config.method
                )))
            }
        };
        if config.timeout.0 <= 0 {
            return Err(err("timeout: must be more than 0s".into()));
        }
        let template = match &config.body {
            Some(text) => Some(Template::parse(text).map_err(|why| err(format!("body: {why}")))?),
            None => None,
        };
        let token = if secrets {
            read_token(&config).map_err(err)?
        } else {
            None
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err(format!("headers: {name:?} is not a valid header name")))?;
            if [
                CONTENT_TYPE.as_str(),
                IDEMPOTENCY_KEY,
                DEDUP_KEY,
                JOB_ID,
                "content-length",
                "host",
            ]
            .contains(&header.as_str())
            {
                return Err(err(format!(
                    "headers.{name}: set by the executor, cannot be configured"
                )));
            }
            if header == AUTHORIZATION && token.is_some() {
                return Err(err(format!(
                    "headers.{name}: give either token_file/token_env or an Authorization header, not both"
                )));
            }
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                err(format!(
                    "headers.{name}: the value holds characters not allowed in a header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        if let Some(token) = token {
            headers.insert(AUTHORIZATION, token);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {}", root_cause(&e))))?;
        Ok(Http {
            action: action.to_string(),
            shown: shown_url(&url),
            config,
            client,
            method,
            url,
            template,
            headers,
        })
    }

    /// Sends the job, retrying what may succeed later, within the timeout.
    async fn send(&self, job: &Job) -> Result<String, ExecError> {
        let headers = self.headers_for(job)?;
        let body = match &self.template {
            Some(template) => template.render(|field| field.value(job)),
            None => job_json(job).to_string(),
        };
        let total = std::time::Duration::from_millis(self.config.timeout.0.max(1) as u64);
        let deadline = Instant::now() + total;
        let attempts = self.config.retries.saturating_add(1);
        let mut delays = Backoff::new(self.config.backoff, Duration(i64::MAX)).delays();
        let mut backoff = delays.next().unwrap_or_default();
        let mut attempt = 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ExecError::Timeout(self.config.timeout));
            }
            let share = share(left, attempts - attempt + 1, backoff);
            let (why, after) = match self.attempt(headers.clone(), body.clone(), share).await {
                Ok(summary) => return Ok(summary),
                Err(Failure::Final(why)) => return Err(ExecError::Permanent(why)),
                Err(Failure::Retry(why, after)) => (why, after),
            };
            // A server that says when to come back is believed, if that
            // fits in the time left; otherwise the backoff applies.
            let wait = after.map_or(backoff, |a| a.max(backoff));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Out of time: the same answer the caller's own timeout gives.
                return Err(ExecError::Timeout(self.config.timeout));
            }
            if attempt == attempts || wait >= left {
                let tries = if attempt == 1 { "attempt" } else { "attempts" };
                return Err(ExecError::Transient(format!("{why} ({attempt} {tries})")));
            }
            tracing::warn!(
                action = %self.action,
                node = %job.intent.node,
                attempt,
                "{why}; retrying in {}",
                millis(wait)
            );
            tokio::time::sleep(wait).await;
            backoff = delays.next().unwrap_or(backoff);
            attempt += 1;
        }
    }

    /// The headers of one job: the fixed ones and its keys.
    fn headers_for(&self, job: &Job) -> Result<HeaderMap, ExecError> {
        let i = &job.intent;
        let mut headers = self.headers.clone();
        for (name, value) in [
            (
                IDEMPOTENCY_KEY,
                format!("{}/{}/{}", i.node, i.fault, i.opened),
            ),
            (DEDUP_KEY, format!("{}/{}", i.node, i.fault)),
            (JOB_ID, job.id.clone()),
        ] {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                ExecError::Permanent(format!(
                    "{name}: {value:?} holds characters not allowed in an HTTP header"
                ))
            })?;
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(headers)
    }

    /// One request: a summary, or why it failed and whether to try again.
    async fn attempt(
        &self,
        headers: HeaderMap,
        body: String,
        limit: std::time::Duration,
    ) -> Result<String, Failure> {
        let what = format!("{} {}", self.method, self.shown);
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .body(body)
            .timeout(limit)
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("{what}: {}", transport(&e, limit)), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        // An unreadable body does not undo the status: it is only left out.
        let text = read_capped(response).await.unwrap_or_default();
        if status.is_success() {
            return Ok(summary(status, &text));
        }
        let text = one_line(&text, 200);
        let why = if text.is_empty() {
            format!("{what}: HTTP {}", status.as_u16())
        } else {
            format!("{what}: HTTP {}: {text}", status.as_u16())
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(Failure::Retry(why, retry_after))
        } else {
            Err(Failure::Final(why))
        }
    }
}

impl Executor for Http {
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(self.send(job))
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }
}

/// The settings as read, without reading the token: URL, method, body
/// template, headers and timeout.
pub fn check(action: &str, config: &Config) -> Result<(), ConfigError> {
    Http::build(action, config.clone(), false).map(drop)
}

/// Why one attempt failed.
enum Failure {
    /// It may succeed later (5xx, 429, no connection, no answer in time);
    /// with the wait the server asked for (`Retry-After`, in seconds).
    Retry(String, Option<std::time::Duration>),
    /// It will not (any other status).
    Final(String),
}

/// How long the next of `planned` attempts may wait for its answer, with
/// `left` until the deadline and `backoff` before the next retry (doubling):
/// an equal share of the time the backoffs leave, so a server that does not
/// answer still leaves room for the retries. Attempts whose backoff would
/// not fit are not planned; the last one planned may use all that is left.
fn share(
    left: std::time::Duration,
    planned: u32,
    backoff: std::time::Duration,
) -> std::time::Duration {
    let policy = Backoff::new(
        Duration(backoff.as_millis().min(i64::MAX as u128) as i64),
        Duration(i64::MAX),
    );
    let waits = |retries: u32| std::time::Duration::from_millis(policy.total(retries).0 as u64);
    let mut planned = planned.max(1);
    while planned > 1 && waits(planned - 1) >= left {
        planned -= 1;
    }
    (left - waits(planned - 1)) / planned
}

/// An absolute `http` or `https` URL with a host.
fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?}: expected http or https", url.scheme()));
    }
    if url.host().is_none() {
        return Err("no host".into());
    }
    Ok(url)
}

/// The URL without what may be a credential: user info, query and fragment.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Only a URL that cannot be a base refuses these; http(s) URLs can.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// [`shown_url`] of a URL as configured, or a placeholder when it does not parse.
fn shown_url_text(text: &str) -> String {
    Url::parse(text).map_or_else(|_| "(invalid)".into(), |url| shown_url(&url))
}

/// The bearer token, from `token_file` or `token_env`, as a sensitive header value.
fn read_token(config: &Config) -> Result<Option<HeaderValue>, String> {
    let (token, source) = match (&config.token_file, &config.token_env) {
        (Some(_), Some(_)) => {
            return Err("token_file and token_env: give one of them, not both".into())
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("token_file {}: {e}", path.display()))?;
            (text, format!("token_file {}", path.display()))
        }
        (None, Some(var)) => {
            let text = std::env::var(var).map_err(|e| format!("token_env {var}: {e}"))?;
            (text, format!("token_env {var}"))
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("{source}: the token is empty"));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| format!("{source}: the token holds characters not allowed in a header"))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// What went wrong with a request that got no status, in a few words.
fn transport(e: &reqwest::Error, limit: std::time::Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}", millis(limit))
    } else if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        format!("request failed: {}", root_cause(e))
    }
}

/// The innermost cause of an error (reqwest's own message names the URL).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// A std duration as remedy writes durations (`250ms`, `2s`).
fn millis(d: std::time::Duration) -> Duration {
    Duration(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The response body, at most [`MAX_RESPONSE`] bytes of it, as text.
async fn read_capped(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() == MAX_RESPONSE {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `HTTP 201: ticket OPS-42` when the answer is JSON naming what it made
/// (`key`, else `number`, else `id`), else the status and the start of the body.
fn summary(status: StatusCode, body: &str) -> String {
    let code = status.as_u16();
    let ticket = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["key", "number", "id"]
                .iter()
                .find_map(|k| match v.get(k)? {
                    serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        });
    match ticket {
        Some(ticket) => format!("HTTP {code}: ticket {}", one_line(&ticket, 100)),
        None => match one_line(body, 100) {
            text if text.is_empty() => format!("HTTP {code}"),
            text => format!("HTTP {code}: {text}"),
        },
    }
}

/// The text on one line (whitespace runs become one space), at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

/// A body template, split into text and placeholders when the executor is built.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Field(Field),
}

/// What a placeholder stands for.
#[derive(Debug)]
enum Field {
    Node,
    Fault,
    Action,
    Reason,
    Opened,
    Ts,
    Id,
    DedupKey,
    Label(String),
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "node" => Field::Node,
            "fault" => Field::Fault,
            "action" => Field::Action,
            "reason" => Field::Reason,
            "opened" => Field::Opened,
            "ts" => Field::Ts,
            "id" => Field::Id,
            "dedup_key" => Field::DedupKey,
            _ => match name.strip_prefix("labels.") {
                Some(label) if !label.is_empty() => Field::Label(label.to_string()),
                _ => return None,
            },
        })
    }

    /// Its value for a job; a label the node does not have is empty.
    fn value<'a>(&self, job: &'a Job) -> Cow<'a, str> {
        let i = &job.intent;
        match self {
            Field::Node => Cow::Borrowed(&i.node),
            Field::Fault => Cow::Borrowed(&i.fault),
            Field::Action => Cow::Borrowed(&i.action),
            Field::Reason => Cow::Borrowed(i.reason.as_deref().unwrap_or("")),
            Field::Opened => Cow::Owned(i.opened.to_string()),
            Field::Ts => Cow::Owned(job.at.to_string()),
            Field::Id => Cow::Borrowed(&job.id),
            Field::DedupKey => Cow::Owned(format!("{}/{}", i.node, i.fault)),
            Field::Label(name) => Cow::Borrowed(i.label(name).unwrap_or("")),
        }
    }
}

impl Template {
    /// Splits `text` at its placeholders; an unknown or unclosed one, or a
    /// template that is not JSON once filled in, is refused.
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!(
                    "a placeholder at byte {} has no closing }}}}",
                    text.len() - rest.len() + open
                ));
            };
            let name = after[..close].trim();
            let field = Field::parse(name).ok_or_else(|| {
                format!(
                    "unknown placeholder {{{{{name}}}}}: expected node, fault, action, reason, \
                     opened, ts, id, dedup_key or labels.NAME"
                )
            })?;
            parts.push(Part::Field(field));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let template = Template { parts };
        let sample = template.render(|_| Cow::Borrowed("x"));
        serde_json::from_str::<serde_json::Value>(&sample).map_err(|e| {
            format!(
                "not JSON once its placeholders are filled in ({e}); \
                 placeholders go inside quotes, e.g. \"node\": \"{{{{node}}}}\""
            )
        })?;
        Ok(template)
    }

    /// The body: each placeholder replaced by its value, escaped as the
    /// inside of a JSON string.
    fn render<'a>(&self, value: impl Fn(&Field) -> Cow<'a, str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => {
                    let quoted = serde_json::Value::String(value(field).into_owned()).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap as Headers, Method as AxumMethod, StatusCode as Status, Uri};
    use remedy_engine::{Decision, Outcome, Timestamp};

    use super::*;
    use crate::executors::testing::{breaker_guards, job, run_jobs, Fleet, COOLDOWN};
    use crate::executors::Executors;

    /// One request as the receiver saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        headers: Headers,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .map_or("", |v| v.to_str().unwrap_or("(not text)"))
        }
    }

    /// Answers from a script, then always the same; records every request.
    #[derive(Default)]
    struct Script {
        replies: VecDeque<(u16, String)>,
        then: (u16, String),
        seen: Vec<Seen>,
    }

    type Shared = Arc<Mutex<Script>>;

    struct Receiver {
        url: String,
        script: Shared,
    }

    impl Receiver {
        fn seen(&self) -> Vec<Seen> {
            self.script.lock().unwrap().seen.clone()
        }

        fn answer(&self, status: u16, body: &str) {
            self.script.lock().unwrap().then = (status, body.to_string());
        }
    }

    /// A receiver on 127.0.0.1 answering `replies` in turn, then `status` with `body`.
    async fn receiver(replies: &[(u16, &str)], status: u16, body: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Shared = Arc::new(Mutex::new(Script {
            replies: replies.iter().map(|(s, b)| (*s, b.to_string())).collect(),
            then: (status, body.to_string()),
            seen: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/api/issues"),
            script,
        }
    }

    async fn record(
        State(script): State<Shared>,
        method: AxumMethod,
        uri: Uri,
        headers: Headers,
        body: String,
    ) -> (Status, String) {
        let mut script = script.lock().unwrap();
        script.seen.push(Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            headers,
            body,
        });
        let (status, body) = script
            .replies
            .pop_front()
            .unwrap_or_else(|| script.then.clone());
        (Status::from_u16(status).unwrap(), body)
    }

    /// A listener that accepts connections and never answers; counts them.
    async fn silent() -> (SocketAddr, Arc<Mutex<usize>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                open.push(socket);
            }
        });
        (addr, accepted)
    }

    fn config(url: &str) -> Config {
        Config {
            backoff: Duration(10),
            timeout: Duration::from_secs(10),
            ..Config::new(url)
        }
    }

    fn executors(config: Config) -> Executors {
        let http: Arc<dyn Executor> = Arc::new(Http::new("ticket", config).unwrap());
        Executors::from_map(BTreeMap::from([("ticket".to_string(), http)]))
    }

    const IDEMPOTENCY: &str = "node-7/memory_failure/2026-11-24T23:58:07Z";

    #[tokio::test]
    async fn the_job_json_is_posted_with_its_idempotency_and_dedup_keys() {
        let r = receiver(&[], 201, r#"{"id": 10001, "key": "OPS-42"}"#).await;
        let mut c = config(&r.url);
        c.headers.insert("X-Team".into(), "infra".into());
        let result = executors(c).run(&job("node-7", "ticket")).await;
        assert_eq!(result, Ok("HTTP 201: ticket OPS-42".to_string()));
        let seen = r.seen();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            ("POST", "/api/issues")
        );
        assert_eq!(s.header("idempotency-key"), IDEMPOTENCY);
        assert_eq!(s.header("x-remedy-dedup-key"), "node-7/memory_failure");
        assert_eq!(
            s.header("x-remedy-job-id"),
            "node-7/memory_failure/2026-11-24T23:58:07Z/ticket"
        );
        assert_eq!(s.header("content-type"), "application/json");
        assert_eq!(s.header("x-team"), "infra");
        assert_eq!(s.header("authorization"), "");
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(body, job_json(&job("node-7", "ticket")));
    }

    #[tokio::test]
    async fn a_template_body_stays_json_whatever_the_reason_holds() {
        let r = receiver(&[], 200, "created\n  in queue INFRA").await;
        let mut c = config(&r.url);
        c.method = "put".into();
        c.body = Some(
            r#"{"title": "{{fault}} on {{ node }}", "text": "{{reason}}",
                "rack": "{{labels.rack}}", "row": "{{labels.row}}", "key": "{{dedup_key}}",
                "opened": "{{opened}}", "id": "{{id}}", "action": "{{action}}"}"#
                .into(),
        );
        let mut j = job("node-7", "ticket");
        let reason = "BMC said \"UE at DIMM A1\"\nthen C:\\dimm\tfailed";
        j.intent.reason = Some(reason.into());
        let result = executors(c).run(&j).await;
        assert_eq!(result, Ok("HTTP 200: created in queue INFRA".to_string()));
        let seen = r.seen();
        assert_eq!(seen[0].method, "PUT");
        let body: serde_json::Value = serde_json::from_str(&seen[0].body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", seen[0].body));
        assert_eq!(body["text"], reason);
        assert_eq!(body["title"], "memory_failure on node-7");
        assert_eq!(body["rack"], "r7");
        assert_eq!(body["row"], "", "a label the node lacks is empty");
        assert_eq!(body["key"], "node-7/memory_failure");
        assert_eq!(body["opened"], "2026-11-24T23:58:07Z");
        assert_eq!(body["id"], j.id);
        assert_eq!(body["action"], "ticket");
    }

    #[tokio::test]
    async fn a_5xx_is_retried_with_the_same_keys_until_it_succeeds() {
        let r = receiver(&[(503, "busy"), (503, "busy")], 201, r#"{"number": 7}"#).await;
        let result = executors(config(&r.url))
            .run(&job("node-7", "ticket"))
            .await;
        assert_eq!(result, Ok("HTTP 201: ticket 7".to_string()));
        let seen = r.seen();
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert_eq!(s.header("idempotency-key"), IDEMPOTENCY);
            assert_eq!(s.header("x-remedy-dedup-key"), "node-7/memory_failure");
            assert_eq!(s.body, seen[0].body);
        }
    }

    #[tokio::test]
    async fn a_retry_after_is_waited_for() {
        async fn busy_once(
            State(calls): State<Arc<Mutex<Vec<std::time::Instant>>>>,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            let mut calls = calls.lock().unwrap();
            calls.push(std::time::Instant::now());
            if calls.len() == 1 {
                (Status::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response()
            } else {
                (Status::CREATED, r#"{"key": "OPS-1"}"#).into_response()
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(busy_once)
            .with_state(calls.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = Config {
            backoff: "10ms".parse().unwrap(),
            ..config(&format!("http://{addr}/api/issues"))
        };
        let result = executors(c).run(&job("node-7", "ticket")).await;
        assert_eq!(result, Ok("HTTP 201: ticket OPS-1".to_string()));
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        let waited = calls[1] - calls[0];
        assert!(
            waited >= std::time::Duration::from_millis(950),
            "the second attempt came after {waited:?}, not the 1s the server asked for"
        );
    }

    #[tokio::test]
    async fn retries_that_all_fail_give_the_last_answer() {
        let r = receiver(&[(429, "slow down")], 502, "bad gateway").await;
        let c = Config {
            retries: 2,
            ..config(&r.url)
        };
        let result = executors(c).run(&job("node-7", "ticket")).await;
        assert_eq!(
            result,
            Err(ExecError::Transient(format!(
                "POST {}: HTTP 502: bad gateway (3 attempts)",
                r.url
            )))
        );
        assert_eq!(r.seen().len(), 3);
    }

    #[tokio::test]
    async fn a_4xx_fails_at_once_with_the_status_and_the_body() {
        let r = receiver(&[], 400, "{\"error\":\n \"missing field title\"}").await;
        let result = executors(config(&r.url))
            .run(&job("node-7", "ticket"))
            .await;
        assert_eq!(
            result,
            Err(ExecError::Permanent(format!(
                "POST {}: HTTP 400: {{\"error\": \"missing field title\"}}",
                r.url
            )))
        );
        assert_eq!(r.seen().len(), 1, "not retried");
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_fails_within_the_timeout() {
        let (addr, accepted) = silent().await;
        let c = Config {
            timeout: Duration(1000),
            retries: 3,
            backoff: Duration(50),
            ..Config::new(format!("http://{addr}/hook"))
        };
        let started = std::time::Instant::now();
        let result = executors(c).run(&job("node-7", "ticket")).await;
        let took = started.elapsed();
        assert_eq!(result, Err(ExecError::Timeout(Duration(1000))));
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
        assert!(
            *accepted.lock().unwrap() >= 2,
            "an attempt without an answer is retried within the timeout"
        );
    }

    #[tokio::test]
    async fn nothing_listening_fails_naming_the_url_and_the_cause() {
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = free.local_addr().unwrap();
        drop(free);
        let c = Config {
            retries: 1,
            ..config(&format!("http://user:pw@{closed}/hook?secret=abc"))
        };
        let result = executors(c).run(&job("node-7", "ticket")).await;
        let why = result.unwrap_err();
        assert!(why.is_transient(), "{why:?}");
        let why = why.to_string();
        assert!(
            why.starts_with(&format!("POST http://{closed}/hook: cannot connect:")),
            "{why}"
        );
        assert!(why.ends_with("(2 attempts)"), "{why}");
        assert!(!why.contains("pw") && !why.contains("secret"), "{why}");
    }

    #[tokio::test]
    async fn a_token_from_a_file_or_the_environment_is_sent_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  tok-from-file-8c1f\n").unwrap();
        std::env::set_var("REMEDY_HTTP_TEST_TOKEN", "tok-from-env-77e2");
        let r = receiver(&[], 201, "").await;
        let from_file = Config {
            token_file: Some(file.clone()),
            headers: BTreeMap::from([("X-Api-Key".to_string(), "key-3b9a".to_string())]),
            ..config(&r.url)
        };
        let from_env = Config {
            token_env: Some("REMEDY_HTTP_TEST_TOKEN".into()),
            ..config(&r.url)
        };
        for (c, token) in [
            (from_file, "tok-from-file-8c1f"),
            (from_env, "tok-from-env-77e2"),
        ] {
            let http = Http::new("ticket", c).unwrap();
            let shown = format!("{http:?} {:?}", http.config);
            assert!(!shown.contains(token), "{shown}");
            assert!(!shown.contains("key-3b9a"), "{shown}");
            let result = http.execute(&job("node-7", "ticket")).await;
            assert_eq!(result.unwrap(), "HTTP 201");
        }
        let seen = r.seen();
        assert_eq!(seen[0].header("authorization"), "Bearer tok-from-file-8c1f");
        assert_eq!(seen[0].header("x-api-key"), "key-3b9a");
        assert_eq!(seen[1].header("authorization"), "Bearer tok-from-env-77e2");
    }

    #[test]
    fn configuration_mistakes_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let cases = [
            (Config::new("tickets.example/api"), "url: not a URL"),
            (
                Config::new("ftp://tickets.example/api"),
                "url: scheme \"ftp\": expected http or https",
            ),
            (
                Config {
                    method: "GET".into(),
                    ..Config::new("http://h/")
                },
                "method \"GET\": expected POST, PUT or PATCH",
            ),
            (
                Config {
                    body: Some(r#"{"n": "{{nodes}}"}"#.into()),
                    ..Config::new("http://h/")
                },
                "body: unknown placeholder {{nodes}}",
            ),
            (
                Config {
                    body: Some(r#"{"n": {{node}}}"#.into()),
                    ..Config::new("http://h/")
                },
                "body: not JSON once its placeholders are filled in",
            ),
            (
                Config {
                    body: Some(r#"{"n": "{{node"}"#.into()),
                    ..Config::new("http://h/")
                },
                "body: a placeholder at byte 7 has no closing }}",
            ),
            (
                Config {
                    token_file: Some(empty.clone()),
                    token_env: Some("HOME".into()),
                    ..Config::new("http://h/")
                },
                "token_file and token_env: give one of them, not both",
            ),
            (
                Config {
                    token_file: Some(empty.clone()),
                    ..Config::new("http://h/")
                },
                "token_file ",
            ),
            (
                Config {
                    token_env: Some("REMEDY_HTTP_TEST_UNSET".into()),
                    ..Config::new("http://h/")
                },
                "token_env REMEDY_HTTP_TEST_UNSET: environment variable not found",
            ),
            (
                Config {
                    headers: BTreeMap::from([("Idempotency-Key".into(), "x".into())]),
                    ..Config::new("http://h/")
                },
                "headers.Idempotency-Key: set by the executor",
            ),
        ];
        for (config, expected) in cases {
            let e = Http::new("ticket", config).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("[actions.ticket] {expected}")),
                "{e} / {expected}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let table: toml::Table = toml::from_str("url = \"http://h/\"\ntoken = \"x\"").unwrap();
        let e = crate::executors::settings::<Config>("ticket", &table).unwrap_err();
        assert!(e.to_string().contains("unknown field `token`"), "{e}");
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .add(Duration::from_secs(secs))
    }

    fn outcomes(out: &[Decision]) -> Vec<(String, Outcome)> {
        out.iter()
            .map(|d| (d.node.clone(), d.outcome.unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_failing_ticket_system_opens_the_breaker_until_a_trial_succeeds() {
        let r = receiver(&[], 500, "ticket system down").await;
        let executors = executors(Config {
            retries: 0,
            ..config(&r.url)
        });
        let mut g = breaker_guards("ticket", "http");
        let mut out = Vec::new();
        g.submit(job("a", "ticket").intent, t(0), &Fleet, &mut out);
        g.submit(job("b", "ticket").intent, t(1), &Fleet, &mut out);
        assert!(g.running().all(|j| j.executor == "ticket"));
        assert_eq!(run_jobs(&mut g, &executors, t(2), &mut out).await, 2);
        g.submit(job("c", "ticket").intent, t(3), &Fleet, &mut out);
        assert!(g.take_jobs().is_empty(), "the open breaker holds c back");
        let names = |list: &[(&str, Outcome)]| -> Vec<(String, Outcome)> {
            list.iter().map(|(n, o)| (n.to_string(), *o)).collect()
        };
        assert_eq!(
            outcomes(&out),
            names(&[
                ("a", Outcome::Failed),
                ("b", Outcome::Failed),
                ("c", Outcome::CircuitOpen)
            ])
        );
        assert_eq!(
            out[0].reason.as_deref(),
            Some(format!("POST {}: HTTP 500: ticket system down (1 attempt)", r.url).as_str())
        );
        assert_eq!(r.seen().len(), 2, "nothing sent while the breaker is open");

        // The ticket system is back; the cooldown (on the service's clock)
        // ends; c is the trial.
        r.answer(201, r#"{"key": "OPS-9"}"#);
        out.clear();
        tokio::time::sleep(COOLDOWN + std::time::Duration::from_millis(100)).await;
        g.tick(t(2 + 120 + 1), &Fleet, &mut out);
        assert_eq!(
            g.running()
                .map(|j| j.intent.node.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(run_jobs(&mut g, &executors, t(124), &mut out).await, 1);
        g.submit(job("d", "ticket").intent, t(125), &Fleet, &mut out);
        assert_eq!(
            run_jobs(&mut g, &executors, t(126), &mut out).await,
            1,
            "closed again: d goes out"
        );
        assert_eq!(
            outcomes(&out),
            names(&[("c", Outcome::Executed), ("d", Outcome::Executed)])
        );
        assert_eq!(out[0].detail.as_deref(), Some("HTTP 201: ticket OPS-9"));
        assert_eq!(r.seen().len(), 4);
    }

    #[test]
    fn each_attempt_gets_an_equal_share_of_what_the_backoffs_leave() {
        let ms = std::time::Duration::from_millis;
        // 1s, 4 attempts, backoffs 50 + 100 + 200ms: (1000 - 350) / 4.
        assert_eq!(share(ms(1000), 4, ms(50)), ms(162) + ms(1) / 2);
        // The last attempt takes all that is left.
        assert_eq!(share(ms(300), 1, ms(200)), ms(300));
        // No backoff fits: one attempt is planned, with all the time.
        assert_eq!(share(ms(150), 4, ms(200)), ms(150));
    }

    #[test]
    fn summaries_prefer_the_ticket_key_and_stay_on_one_line() {
        assert_eq!(
            summary(StatusCode::CREATED, r#"{"id": 10001, "key": "OPS-42"}"#),
            "HTTP 201: ticket OPS-42"
        );
        assert_eq!(
            summary(StatusCode::CREATED, r#"{"id": 10001}"#),
            "HTTP 201: ticket 10001"
        );
        assert_eq!(summary(StatusCode::NO_CONTENT, ""), "HTTP 204");
        let long = "ok ".repeat(60);
        let s = summary(StatusCode::OK, &long);
        assert_eq!(s.len(), "HTTP 200: ".len() + 100 + 3, "{s}");
        assert!(s.ends_with("..."));
    }
}
