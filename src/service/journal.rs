//! The journal: every decision and every fault, in SQLite (WAL), so that a
//! restart loses nothing and the API can answer from it. Behind the
//! [`Journal`] trait so that PostgreSQL can follow for several instances.

use std::collections::BTreeMap;
use std::path::Path;

use remedy_actions::Job;
use remedy_engine::{Decision, Duration, Event, Timestamp};

use crate::pipeline::Input;
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite said no.
    #[error("journal: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another instance took the lease over: this one may no longer write.
    #[error(
        "journal: the lease of {holder} at epoch {epoch} was taken over by another instance; \
         this one no longer writes (it steps down)"
    )]
    Fenced {
        /// This instance.
        holder: String,
        /// The epoch it held.
        epoch: i64,
    },
    /// PostgreSQL said no (or could not be reached).
    #[error("journal (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    /// The schema could not be brought up to date.
    #[error("journal migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A stored job did not parse.
    #[error("journal: stored job {id} is not valid: {source}")]
    CorruptJob {
        /// Its id.
        id: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The journal file was deleted or replaced while the service ran.
    #[error(
        "journal {}: the file was deleted or replaced while remedy ran; nothing more is \
         acknowledged until remedy is restarted on a journal that is there",
        path.display()
    )]
    Gone {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A stored input did not parse.
    #[error("journal: stored input {seq} is not valid: {reason}")]
    CorruptInput {
        /// Its sequence number.
        seq: i64,
        /// Why.
        reason: String,
    },
    /// A stored decision did not parse.
    #[error("journal: stored decision {seq} is not valid: {source}")]
    Corrupt {
        /// Its sequence number.
        seq: i64,
        /// Why.
        source: serde_json::Error,
    },
}

/// A fault as the journal knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultRow {
    /// The node.
    pub node: String,
    /// The fault class.
    pub fault: String,
    /// Severity it opened with.
    pub severity: Option<String>,
    /// The rule that opened it.
    pub rule: Option<String>,
    /// The rule's reason.
    pub reason: Option<String>,
    /// The type of the signal that opened it.
    #[serde(skip)]
    pub signal_type: Option<String>,
    /// When it opened.
    pub opened_at: Timestamp,
    /// When it resolved, if it has.
    pub resolved_at: Option<Timestamp>,
}

/// A journaled decision with its sequence number.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Journaled {
    /// Position in the journal; `GET /v1/decisions?since=` takes it.
    pub seq: i64,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// What one command of the decider changed, written atomically: all or none.
#[derive(Debug, Default)]
pub struct Write {
    /// Decisions, each with the type of the signal it came from (that type
    /// asserts the faults it opens).
    pub entries: Vec<(Decision, Option<String>)>,
    /// The `id`s of the signals decided.
    pub ids: Vec<String>,
    /// The nodes acted on, and the failure domains with faults: a restart
    /// knows their labels before they send again, and which are domains.
    pub nodes: Vec<KnownNode>,
    /// Jobs handed to executors: kept until they finish, so a restart runs
    /// again what was running (executors are idempotent on the job id).
    pub started: Vec<Job>,
    /// Jobs that finished (their decision is among `entries`).
    pub finished: Vec<String>,
    /// Aliases learned: (alias, canonical node).
    pub aliases: Vec<(String, String)>,
    /// Signals that count in windows: (node, type, ts), for a restart.
    pub history: Vec<(String, String, Timestamp)>,
    /// Every node seen, with its labels: which nodes a domain knows.
    pub seen: BTreeMap<String, (Vec<(String, String)>, Timestamp)>,
    /// Nodes forgotten (`forget_after`): no longer part of any domain.
    pub forgotten: Vec<String>,
    /// What the pipeline was given, and when, in order.
    pub inputs: Vec<(Timestamp, Input)>,
    /// Quotas whose state changed.
    pub quotas: Vec<Quota>,
}

/// What became of one action of a fault, from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionState {
    /// The action.
    pub action: String,
    /// Its last outcome.
    pub last: String,
    /// Whether it ever passed (dry_run or executed).
    pub passed: bool,
    /// When it was to be tried again, if its last decision said.
    pub retry_at: Option<Timestamp>,
    /// Its last decision's `why` (rule and rung; its guards are met again).
    pub why: Box<remedy_engine::Why>,
    /// Its params (an upgrade's component and version).
    pub params: std::collections::BTreeMap<String, String>,
}

/// A quota's state: (action, domain value or `None` for fleet-wide,
/// governor's theoretical arrival time in nanoseconds).
pub type Quota = (String, Option<String>, u64);

/// How a quota's scope is stored: fleet-wide, or one domain value.
pub(super) fn scope(domain: &Option<String>) -> String {
    match domain {
        None => "fleet".to_string(),
        Some(value) => format!("per:{value}"),
    }
}

impl Write {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.ids.is_empty()
            && self.nodes.is_empty()
            && self.started.is_empty()
            && self.finished.is_empty()
            && self.aliases.is_empty()
            && self.history.is_empty()
            && self.seen.is_empty()
            && self.forgotten.is_empty()
            && self.inputs.is_empty()
            && self.quotas.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.ids.clear();
        self.nodes.clear();
        self.started.clear();
        self.finished.clear();
        self.aliases.clear();
        self.history.clear();
        self.seen.clear();
        self.forgotten.clear();
        self.inputs.clear();
        self.quotas.clear();
    }
}

/// What the journal keeps of a node between restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownNode {
    /// Its name.
    pub node: String,
    /// Its labels as last seen (its failure domains).
    pub labels: Vec<(String, String)>,
    /// A failure domain's entry (a cluster-wide alert's faults), not a machine.
    pub domain: bool,
}

/// Where decisions and faults are kept.
pub trait Journal: Send {
    /// Records one [`Write`] atomically and empties it; on error it keeps
    /// everything for the next attempt.
    fn record(&mut self, write: &mut Write) -> Result<(), JournalError>;
    /// Jobs started and not finished, oldest first.
    fn running_jobs(&self) -> Result<Vec<Job>, JournalError>;
    /// The most recent signal `id`s, oldest first, at most `limit`.
    fn recent_ids(&self, limit: usize) -> Result<Vec<String>, JournalError>;
    /// (node, fault, opened) of every fault opened since `since`, oldest first.
    fn openings(&self, since: Timestamp) -> Result<Vec<(String, String, Timestamp)>, JournalError>;
    /// (node, type, ts) of the signals that count in windows since `since`.
    fn history(&self, since: Timestamp) -> Result<Vec<(String, String, Timestamp)>, JournalError>;
    /// Every node seen, with its labels.
    fn seen(&self) -> Result<Vec<(KnownNode, Timestamp)>, JournalError>;
    /// Every alias learned, with its canonical node, in the order learned.
    fn aliases(&self) -> Result<Vec<(String, String)>, JournalError>;
    /// Faults, open or resolved or both, optionally of one node.
    fn faults(&self, open: Option<bool>, node: Option<&str>)
        -> Result<Vec<FaultRow>, JournalError>;
    /// Decisions after `since` (a sequence number), at most `limit`.
    fn decisions(&self, since: i64, limit: usize) -> Result<Vec<Journaled>, JournalError>;
    /// Every decision, in order, page by page.
    fn each_decision(
        &self,
        f: &mut dyn FnMut(&Decision) -> Result<(), JournalError>,
    ) -> Result<(), JournalError> {
        let mut since = 0;
        loop {
            let page = self.decisions(since, 10_000)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            since = last.seq;
            for j in &page {
                f(&j.decision)?;
            }
        }
    }
    /// The decisions about `node` after `since`, at most `limit`.
    fn decisions_of(
        &self,
        node: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Journaled>, JournalError>;
    /// Whether a write would succeed now.
    fn writable(&self) -> bool;
    /// [`Journal::writable`], for a connection that may have to be opened
    /// again first (readiness follows the store, not an old failure).
    fn probe(&mut self) -> bool {
        self.writable()
    }
    /// How far the follower `name` got (a decision sequence number; 0: nowhere).
    fn cursor(&self, name: &str) -> Result<i64, JournalError>;
    /// Records how far the follower `name` got.
    fn set_cursor(&mut self, name: &str, seq: i64) -> Result<(), JournalError>;
    /// The last outcome of each action decided for `fault` on `node` since
    /// `since`, and whether it ever passed: (action, last outcome, passed).
    fn action_states(
        &self,
        node: &str,
        fault: &str,
        since: Timestamp,
    ) -> Result<Vec<ActionState>, JournalError>;
    /// A node's remembered labels.
    fn node(&self, node: &str) -> Result<KnownNode, JournalError>;
    /// Inputs after sequence number `after`, at most `limit`, in order:
    /// (seq, when taken in, what).
    fn inputs(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Timestamp, Input)>, JournalError>;
    /// Every quota's last state.
    fn quotas(&self) -> Result<Vec<Quota>, JournalError>;
    /// Holds an operator released since `since`: (label, value, when).
    fn released_holds(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(String, String, Timestamp)>, JournalError> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.inputs(after, 10_000)?;
            let Some(&(last, ..)) = page.last() else {
                return Ok(out);
            };
            after = last;
            for (_, taken, input) in page {
                if let (Input::ReleaseHold { label, value }, true) = (input, taken >= since) {
                    out.push((label, value, taken));
                }
            }
        }
    }
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE decisions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts_ms INTEGER NOT NULL,
            event TEXT NOT NULL,
            node TEXT NOT NULL,
            fault TEXT NOT NULL,
            action TEXT,
            outcome TEXT,
            json TEXT NOT NULL
        );
        CREATE INDEX decisions_by_node ON decisions (node, fault);
        CREATE TABLE faults (
            node TEXT NOT NULL,
            fault TEXT NOT NULL,
            severity TEXT,
            rule TEXT,
            reason TEXT,
            opened_ms INTEGER NOT NULL,
            resolved_ms INTEGER,
            signal_type TEXT,
            PRIMARY KEY (node, fault, opened_ms)
        );
        CREATE INDEX faults_open ON faults (resolved_ms, node);",
        ),
        // v2: the labels of nodes that actions were decided for, so that a
        // restart knows their failure domains before they send again.
        M::up("CREATE TABLE nodes (node TEXT PRIMARY KEY, labels TEXT NOT NULL);"),
        // v3: recent signal ids, so that a resent signal is still ignored
        // after a restart.
        M::up(
            "CREATE TABLE signal_ids (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE);",
        ),
        // v4: jobs handed to executors and not finished yet.
        M::up(
            "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, json TEXT NOT NULL);",
        ),
        // v5: how far followers of the journal (the decisions topic) got.
        M::up("CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);"),
        // v6: which entries are failure domains (cluster-wide alerts), not machines.
        M::up("ALTER TABLE nodes ADD COLUMN domain INTEGER NOT NULL DEFAULT 0;"),
        // v7: node aliases learned from signals ([identity] alias_labels).
        M::up(
            "CREATE TABLE aliases (seq INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL UNIQUE, node TEXT NOT NULL);",
        ),
        // v8: what the rules count and which nodes exist survive a restart.
        M::up(
            "CREATE TABLE history (node TEXT NOT NULL, type TEXT NOT NULL, ts_ms INTEGER NOT NULL);
             CREATE INDEX history_ts ON history (ts_ms);
             CREATE TABLE seen (node TEXT PRIMARY KEY, labels TEXT NOT NULL, last_ms INTEGER NOT NULL);",
        ),
        // v9: the input itself and when it was taken in: `replay --journal`
        // runs the same steps at the same times.
        M::up(
            "CREATE TABLE inputs (seq INTEGER PRIMARY KEY AUTOINCREMENT, taken_ms INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
             CREATE INDEX inputs_taken ON inputs (taken_ms);",
        ),
        // v10: each quota's state, so a restart refills none early.
        M::up(
            "CREATE TABLE quotas (action TEXT NOT NULL, scope TEXT NOT NULL, tat_ns INTEGER NOT NULL, PRIMARY KEY (action, scope));",
        ),
    ])
}

/// Opens (creating and migrating as needed) the journal at `url`, keeping
/// inputs for `keep_inputs`.
pub fn open(
    url: &crate::config::JournalUrl,
    keep_inputs: Duration,
) -> Result<Box<dyn Journal>, JournalError> {
    Ok(match url {
        crate::config::JournalUrl::Sqlite(path) => {
            Box::new(Sqlite::open(path)?.keep_inputs(keep_inputs))
        }
        crate::config::JournalUrl::Postgres(url) => {
            Box::new(super::postgres::Postgres::open(url)?.keep_inputs(keep_inputs))
        }
    })
}

/// A second connection to the journal at `url`, for readers: it never
/// creates an SQLite file.
pub fn reader(url: &crate::config::JournalUrl) -> Result<Box<dyn Journal>, JournalError> {
    Ok(match url {
        crate::config::JournalUrl::Sqlite(path) => Box::new(Sqlite::reader(path)?),
        crate::config::JournalUrl::Postgres(url) => Box::new(super::postgres::Postgres::open(url)?),
    })
}

/// How long the journal keeps the signals the rules count: as long as the
/// engine remembers them (its history horizon, 24h).
pub const HISTORY_KEPT_MS: i64 = 24 * 3600 * 1000;

/// Signal ids the journal keeps (the engine remembers as many by default).
pub const KEPT_IDS: usize = 100_000;

/// The SQLite journal.
#[derive(Debug)]
pub struct Sqlite {
    conn: Connection,
    /// The file and which file it was when opened: a journal deleted or
    /// replaced under a running service must not take writes it would lose.
    path: std::path::PathBuf,
    file: Option<FileId>,
    /// How long inputs are kept (`[journal] keep_inputs`).
    keep_inputs: Duration,
}

/// How long the journal keeps its inputs unless `[journal] keep_inputs` says.
pub const KEEP_INPUTS: Duration = Duration(7 * 24 * 3_600_000);

/// (device, inode) of a file, where the platform has them.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| (0, 0))
    }
}

impl Sqlite {
    /// Opens (creating and migrating as needed) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations().to_latest(&mut conn)?;
        Ok(Sqlite {
            conn,
            path: path.to_path_buf(),
            file: file_id(path),
            keep_inputs: KEEP_INPUTS,
        })
    }

    /// Keeps inputs for `keep` (behind the newest).
    pub fn keep_inputs(mut self, keep: Duration) -> Self {
        self.keep_inputs = keep;
        self
    }

    /// Whether the journal file is still the one opened: deleted or
    /// replaced, writes would go to a file no restart will read.
    fn check_file(&self) -> Result<(), JournalError> {
        match (self.file, file_id(&self.path)) {
            (Some(opened), Some(now)) if opened == now => Ok(()),
            (None, _) => Ok(()),
            _ => Err(JournalError::Gone {
                path: self.path.clone(),
            }),
        }
    }

    /// A second connection for readers (WAL lets them read while the writer writes).
    pub fn reader(path: &Path) -> Result<Self, JournalError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Sqlite {
            conn,
            path: path.to_path_buf(),
            file: file_id(path),
            keep_inputs: KEEP_INPUTS,
        })
    }
}

/// Decisions read back from `(seq, json)` rows.
fn journaled(
    rows: impl Iterator<Item = rusqlite::Result<(i64, String)>>,
) -> Result<Vec<Journaled>, JournalError> {
    rows.map(|row| {
        let (seq, json) = row?;
        journaled_row(seq, &json)
    })
    .collect()
}

// How both journals store what is not a column: the same text in each.

/// A journaled decision from its row.
pub(super) fn journaled_row(seq: i64, json: &str) -> Result<Journaled, JournalError> {
    serde_json::from_str(json)
        .map(|decision| Journaled { seq, decision })
        .map_err(|source| JournalError::Corrupt { seq, source })
}

/// A job from its row.
pub(super) fn job_row(id: String, json: &str) -> Result<Job, JournalError> {
    serde_json::from_str(json).map_err(|source| JournalError::CorruptJob { id, source })
}

/// A node's labels as stored: a JSON object, keys sorted.
pub(super) fn labels_text(labels: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// A node's labels from their stored text (none if it does not parse).
pub(super) fn labels_of(text: &str) -> Vec<(String, String)> {
    let map: BTreeMap<String, String> = serde_json::from_str(text).unwrap_or_default();
    map.into_iter().collect()
}

impl ActionState {
    /// From its row: the action, its last outcome, whether it ever passed,
    /// and its last decision's JSON (its `retry_at` and `why`).
    pub(super) fn of_row(action: String, last: String, passed: bool, json: Option<&str>) -> Self {
        let decision: Option<Decision> = json.and_then(|j| serde_json::from_str(j).ok());
        ActionState {
            action,
            last,
            passed,
            retry_at: decision.as_ref().and_then(|d| d.retry_at),
            params: decision
                .as_ref()
                .map(|d| d.params.clone())
                .unwrap_or_default(),
            why: decision.and_then(|d| d.why).unwrap_or_default(),
        }
    }
}

impl Journal for Sqlite {
    fn record(&mut self, write: &mut Write) -> Result<(), JournalError> {
        if write.is_empty() {
            return Ok(());
        }
        self.check_file()?;
        let Write {
            entries,
            ids,
            nodes,
            started,
            finished,
            aliases,
            history,
            seen,
            forgotten,
            inputs,
            quotas,
        } = &*write;
        let tx = self.conn.transaction()?;
        if !quotas.is_empty() {
            let mut set = tx.prepare_cached(
                "INSERT INTO quotas (action, scope, tat_ns) VALUES (?1, ?2, ?3)
                 ON CONFLICT (action, scope) DO UPDATE SET tat_ns = excluded.tat_ns",
            )?;
            for (action, domain, tat) in quotas {
                set.execute(params![action, scope(domain), *tat as i64])?;
            }
        }
        if !inputs.is_empty() {
            let mut add =
                tx.prepare_cached("INSERT INTO inputs (taken_ms, kind, body) VALUES (?1, ?2, ?3)")?;
            for (taken, input) in inputs {
                let (kind, body) = input.to_row();
                add.execute(params![taken.0, kind, body])?;
            }
            if let Some(newest) = inputs.iter().map(|i| i.0 .0).max() {
                tx.prepare_cached("DELETE FROM inputs WHERE taken_ms < ?1")?
                    .execute(params![newest.saturating_sub(self.keep_inputs.0)])?;
            }
        }
        if !forgotten.is_empty() {
            // One pass over the history for all of them (it has no index
            // by node: inserting signals is what must stay cheap).
            let names = serde_json::to_string(forgotten).unwrap_or_default();
            tx.prepare_cached("DELETE FROM seen WHERE node IN (SELECT value FROM json_each(?1))")?
                .execute(params![names])?;
            tx.prepare_cached(
                "DELETE FROM history WHERE node IN (SELECT value FROM json_each(?1))",
            )?
            .execute(params![names])?;
        }
        if !started.is_empty() || !finished.is_empty() {
            let mut start = tx.prepare_cached(
                "INSERT INTO jobs (id, json) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET json = excluded.json",
            )?;
            for job in started {
                let json = serde_json::to_string(job).unwrap_or_default();
                start.execute(params![job.id, json])?;
            }
            let mut finish = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
            for id in finished {
                finish.execute(params![id])?;
            }
        }
        if !nodes.is_empty() {
            let mut remember = tx.prepare_cached(
                "INSERT INTO nodes (node, labels, domain) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node) DO UPDATE SET labels = excluded.labels, domain = excluded.domain",
            )?;
            for KnownNode {
                node,
                labels,
                domain,
            } in nodes
            {
                remember.execute(params![node, labels_text(labels), domain])?;
            }
        }
        if !history.is_empty() {
            let mut count =
                tx.prepare_cached("INSERT INTO history (node, type, ts_ms) VALUES (?1, ?2, ?3)")?;
            for (node, r#type, ts) in history {
                count.execute(params![node, r#type, ts.0])?;
            }
            // Older than any window the rules can ask about (24h): gone.
            if let Some(newest) = history.iter().map(|h| h.2 .0).max() {
                tx.prepare_cached("DELETE FROM history WHERE ts_ms < ?1")?
                    .execute(params![newest - HISTORY_KEPT_MS])?;
            }
        }
        if !seen.is_empty() {
            let mut known = tx.prepare_cached(
                "INSERT INTO seen (node, labels, last_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node) DO UPDATE SET labels = excluded.labels, last_ms = excluded.last_ms",
            )?;
            for (node, (labels, last)) in seen {
                known.execute(params![node, labels_text(labels), last.0])?;
            }
        }
        if !aliases.is_empty() {
            // A re-learned alias moves to the end: the newest word counts at a restart.
            let mut learn = tx.prepare_cached(
                "INSERT INTO aliases (alias, node) VALUES (?1, ?2)
                 ON CONFLICT (alias) DO UPDATE SET node = excluded.node,
                 seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM aliases)",
            )?;
            for (alias, node) in aliases {
                learn.execute(params![alias, node])?;
            }
        }
        if !ids.is_empty() {
            let mut seen =
                tx.prepare_cached("INSERT OR IGNORE INTO signal_ids (id) VALUES (?1)")?;
            for id in ids {
                seen.execute(params![id])?;
            }
            // Keep the most recent ones only, as the engine does in memory.
            tx.execute(
                "DELETE FROM signal_ids WHERE seq <= (SELECT MAX(seq) FROM signal_ids) - ?1",
                params![KEPT_IDS as i64],
            )?;
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO decisions (ts_ms, event, node, fault, action, outcome, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut open = tx.prepare_cached(
                "INSERT INTO faults (node, fault, severity, rule, reason, opened_ms, signal_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (node, fault, opened_ms) DO UPDATE SET
                   resolved_ms = NULL, severity = excluded.severity, rule = excluded.rule,
                   reason = excluded.reason, signal_type = excluded.signal_type",
            )?;
            let mut close = tx.prepare_cached(
                "UPDATE faults SET resolved_ms = ?3
                 WHERE node = ?1 AND fault = ?2 AND resolved_ms IS NULL",
            )?;
            for (d, signal_type) in entries {
                insert.execute(params![
                    d.ts.0,
                    d.event.as_str(),
                    d.node,
                    d.fault,
                    d.action,
                    d.outcome.map(|o| o.as_str()),
                    d.to_json()
                ])?;
                match d.event {
                    Event::FaultOpened => {
                        open.execute(params![
                            d.node,
                            d.fault,
                            d.severity.map(|s| s.as_str()),
                            d.rule,
                            d.reason,
                            d.ts.0,
                            signal_type
                        ])?;
                    }
                    Event::FaultResolved => {
                        close.execute(params![d.node, d.fault, d.ts.0])?;
                    }
                    Event::Action | Event::FaultStale | Event::FaultUnverified | Event::Step => {}
                }
            }
        }
        tx.commit()?;
        write.clear();
        Ok(())
    }

    fn running_jobs(&self) -> Result<Vec<Job>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, json FROM jobs ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, json) = row?;
            job_row(id, &json)
        })
        .collect()
    }

    fn faults(
        &self,
        open: Option<bool>,
        node: Option<&str>,
    ) -> Result<Vec<FaultRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node, fault, severity, rule, reason, opened_ms, resolved_ms, signal_type FROM faults
             WHERE (?1 IS NULL OR (?1 = 1 AND resolved_ms IS NULL) OR (?1 = 0 AND resolved_ms IS NOT NULL))
               AND (?2 IS NULL OR node = ?2)
             ORDER BY opened_ms, node, fault",
        )?;
        let rows = stmt.query_map(params![open.map(i64::from), node], |r| {
            Ok(FaultRow {
                node: r.get(0)?,
                fault: r.get(1)?,
                severity: r.get(2)?,
                rule: r.get(3)?,
                reason: r.get(4)?,
                opened_at: Timestamp(r.get(5)?),
                resolved_at: r.get::<_, Option<i64>>(6)?.map(Timestamp),
                signal_type: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn decisions(&self, since: i64, limit: usize) -> Result<Vec<Journaled>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, json FROM decisions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        journaled(rows)
    }

    fn decisions_of(
        &self,
        node: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Journaled>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, json FROM decisions WHERE node = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![node, since, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        journaled(rows)
    }

    fn recent_ids(&self, limit: usize) -> Result<Vec<String>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM (SELECT seq, id FROM signal_ids ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn history(&self, since: Timestamp) -> Result<Vec<(String, String, Timestamp)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node, type, ts_ms FROM history WHERE ts_ms >= ?1 ORDER BY ts_ms",
        )?;
        let rows = stmt.query_map(params![since.0], |r| {
            Ok((r.get(0)?, r.get(1)?, Timestamp(r.get(2)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn seen(&self) -> Result<Vec<(KnownNode, Timestamp)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT node, labels, last_ms FROM seen ORDER BY node")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                Timestamp(r.get(2)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (node, text, last) = row?;
            let node = KnownNode {
                node,
                labels: labels_of(&text),
                domain: false,
            };
            out.push((node, last));
        }
        Ok(out)
    }

    fn openings(&self, since: Timestamp) -> Result<Vec<(String, String, Timestamp)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node, fault, opened_ms FROM faults WHERE opened_ms >= ?1 ORDER BY opened_ms",
        )?;
        let rows = stmt.query_map(params![since.0], |r| {
            Ok((r.get(0)?, r.get(1)?, Timestamp(r.get(2)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn aliases(&self) -> Result<Vec<(String, String)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT alias, node FROM aliases ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn action_states(
        &self,
        node: &str,
        fault: &str,
        since: Timestamp,
    ) -> Result<Vec<ActionState>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT action,
                    (SELECT outcome FROM decisions l WHERE l.node = d.node AND l.fault = d.fault
                       AND l.action = d.action AND l.ts_ms >= ?3 ORDER BY l.seq DESC LIMIT 1),
                    MAX(outcome IN ('dry_run', 'executed')),
                    (SELECT l.json FROM decisions l WHERE l.node = d.node
                       AND l.fault = d.fault AND l.action = d.action AND l.ts_ms >= ?3
                       ORDER BY l.seq DESC LIMIT 1)
             FROM decisions d
             WHERE node = ?1 AND fault = ?2 AND ts_ms >= ?3 AND action IS NOT NULL
             GROUP BY action ORDER BY MIN(seq)",
        )?;
        let rows = stmt.query_map(params![node, fault, since.0], |r| {
            Ok(ActionState::of_row(
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? == 1,
                r.get::<_, Option<String>>(3)?.as_deref(),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn node(&self, node: &str) -> Result<KnownNode, JournalError> {
        let row: Option<(String, bool)> = self
            .conn
            .query_row(
                "SELECT labels, domain FROM nodes WHERE node = ?1",
                params![node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (text, domain) = row.unwrap_or_default();
        Ok(KnownNode {
            node: node.to_string(),
            labels: labels_of(&text),
            domain,
        })
    }

    fn quotas(&self) -> Result<Vec<Quota>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT action, scope, tat_ns FROM quotas ORDER BY action, scope")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (action, scope, tat) = row?;
            let domain = scope.strip_prefix("per:").map(str::to_string);
            out.push((action, domain, tat.max(0) as u64));
        }
        Ok(out)
    }

    fn inputs(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Timestamp, Input)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, taken_ms, kind, body FROM inputs WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Timestamp(r.get(1)?),
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, taken, kind, body) = row?;
            let input = Input::from_row(&kind, body)
                .map_err(|reason| JournalError::CorruptInput { seq, reason })?;
            out.push((seq, taken, input));
        }
        Ok(out)
    }

    /// How far the follower `name` got (a decision sequence number; 0: nowhere).
    fn cursor(&self, name: &str) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM cursors WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Records how far the follower `name` got.
    fn set_cursor(&mut self, name: &str, seq: i64) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO cursors (name, seq) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            params![name, seq],
        )?;
        Ok(())
    }

    /// Whether a write would succeed now ([`Journal::writable`]); a
    /// connection that failed to write (SQLite keeps a WAL it could not
    /// open for writing read-only for as long as it lives) is reopened
    /// first, so the answer follows the disk, not an old failure.
    fn probe(&mut self) -> bool {
        if self.writable() {
            return true;
        }
        match Connection::open(&self.path) {
            Ok(conn) => {
                let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
                self.conn = conn;
                self.writable()
            }
            Err(_) => false,
        }
    }

    fn writable(&self) -> bool {
        // A real write, not a read: a read-only or full journal answers reads.
        self.check_file().is_ok()
            && !self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
            && self
                .conn
                .execute(
                    "INSERT INTO cursors (name, seq) VALUES ('readyz probe', 0)
                     ON CONFLICT (name) DO UPDATE SET seq = seq + 1",
                    [],
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::{Outcome, Severity};

    /// Opens the journal under test again (a restart): the same file or database.
    type Open<'a> = &'a dyn Fn() -> Box<dyn Journal>;

    /// The journal suite: each test takes a fresh journal.
    const SUITE: [fn(Open); 4] = [
        decisions_and_faults_survive_reopening,
        running_jobs_are_kept_until_they_finish,
        what_the_rules_count_and_the_input_survive_reopening,
        a_fault_that_opens_resolves_and_opens_again_in_one_batch_is_open_once,
    ];

    #[test]
    fn the_sqlite_journal_passes_the_journal_suite() {
        for test in SUITE {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("j.db");
            test(&|| Box::new(Sqlite::open(&path).unwrap()));
        }
    }

    #[test]
    fn the_postgres_journal_passes_the_journal_suite() {
        let pg = remedy_testkit::Postgres::start();
        for (i, test) in SUITE.into_iter().enumerate() {
            let url = pg.database(&format!("suite{i}"));
            test(&|| Box::new(crate::service::postgres::Postgres::open(&url).unwrap()));
        }
    }

    fn decisions_and_faults_survive_reopening(open: Open) {
        let t = |s: i64| Timestamp::from_secs(1_800_000_000 + s);
        let ue = |d: Decision| (d, Some("memory.ecc.uncorrectable".to_string()));
        {
            let mut j = open();
            j.record(&mut Write {
                entries: vec![
                    ue(Decision::opened(
                        t(0),
                        "n1",
                        "memory_failure",
                        Severity::Critical,
                        "hardware/memory.rhai",
                        Some("UE".into()),
                    )),
                    ue(Decision::action(
                        t(0),
                        "n1",
                        "memory_failure",
                        "cordon",
                        Outcome::DryRun,
                        None,
                    )),
                    ue(Decision::opened(
                        t(1),
                        "n2",
                        "disk_failure",
                        Severity::Critical,
                        "hardware/disk.rhai",
                        None,
                    )),
                ],
                nodes: vec![
                    KnownNode {
                        node: "n1".into(),
                        labels: vec![("cluster".into(), "c1".into())],
                        domain: false,
                    },
                    KnownNode {
                        node: "cluster=c1".into(),
                        labels: vec![("cluster".into(), "c1".into())],
                        domain: true,
                    },
                ],
                ..Write::default()
            })
            .unwrap();
            j.record(&mut Write {
                aliases: vec![
                    ("10.0.0.1".into(), "n1".into()),
                    ("10.0.0.2".into(), "n1".into()),
                ],
                ..Write::default()
            })
            .unwrap();
            j.record(&mut Write {
                aliases: vec![
                    ("10.0.0.2".into(), "n1".into()),
                    ("10.0.0.1".into(), "n2".into()),
                ],
                ..Write::default()
            })
            .unwrap();
            j.record(&mut Write {
                entries: vec![(Decision::resolved(t(5), "n1", "memory_failure"), None)],
                ids: vec!["k1".into(), "k2".into()],
                ..Write::default()
            })
            .unwrap();
        }
        let j = open();
        let opened = j.faults(Some(true), None).unwrap();
        assert_eq!(opened.len(), 1);
        assert_eq!(
            (opened[0].node.as_str(), opened[0].fault.as_str()),
            ("n2", "disk_failure")
        );
        assert_eq!(
            opened[0].signal_type.as_deref(),
            Some("memory.ecc.uncorrectable")
        );
        let resolved = j.faults(Some(false), Some("n1")).unwrap();
        assert_eq!(resolved[0].resolved_at, Some(t(5)));
        assert_eq!(resolved[0].reason.as_deref(), Some("UE"));
        let all = j.decisions(0, 100).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].decision.action.as_deref(), Some("cordon"));
        let later = j.decisions(all[1].seq, 100).unwrap();
        assert_eq!(later.len(), 2);
        assert!(j.writable());
        assert_eq!(j.recent_ids(10).unwrap(), ["k1", "k2"]);
        assert_eq!(j.recent_ids(1).unwrap(), ["k2"]);
        let n1 = j.node("n1").unwrap();
        assert_eq!(n1.labels, [("cluster".to_string(), "c1".to_string())]);
        assert!(!n1.domain);
        assert!(j.node("cluster=c1").unwrap().domain, "a domain stays one");
        assert!(j.node("n2").unwrap().labels.is_empty());
        assert_eq!(
            j.aliases().unwrap(),
            [
                ("10.0.0.2".to_string(), "n1".to_string()),
                ("10.0.0.1".into(), "n2".into())
            ],
            "in the order last learned: 10.0.0.1 now names n2"
        );
        assert!(j.running_jobs().unwrap().is_empty());
        let states = j.action_states("n1", "memory_failure", t(0)).unwrap();
        assert_eq!(
            states,
            [ActionState {
                action: "cordon".to_string(),
                last: "dry_run".to_string(),
                passed: true,
                retry_at: None,
                why: Default::default(),
                params: Default::default(),
            }]
        );
    }

    fn running_jobs_are_kept_until_they_finish(open: Open) {
        let at = Timestamp::from_secs(1_800_000_000);
        let job = |node: &str| {
            let intent = remedy_engine::Intent {
                domain: false,
                at,
                node: node.into(),
                fault: "memory_failure".into(),
                opened: at,
                reason: Some("UE".into()),
                action: "cordon".into(),
                labels: vec![("cluster".into(), "c1".into())],
                trigger: remedy_engine::Trigger::Remedy,
                approval: false,
                why: Default::default(),
                params: Default::default(),
            };
            Job {
                id: intent.key(),
                executor: "kubernetes".into(),
                at,
                intent,
                attempt: 0,
                retry_at: None,
                failing_since: None,
            }
        };
        {
            let mut j = open();
            let mut w = Write {
                started: vec![job("n1"), job("n2")],
                ..Write::default()
            };
            j.record(&mut w).unwrap();
            assert!(w.is_empty(), "a written batch is emptied");
            let mut done = Write {
                finished: vec![job("n1").id],
                entries: vec![(
                    Decision::action(
                        at,
                        "n1",
                        "memory_failure",
                        "cordon",
                        Outcome::Executed,
                        None,
                    ),
                    None,
                )],
                ..Write::default()
            };
            j.record(&mut done).unwrap();
        }
        let j = open();
        assert_eq!(j.running_jobs().unwrap(), [job("n2")]);
    }

    fn a_fault_that_opens_resolves_and_opens_again_in_one_batch_is_open_once(open: Open) {
        let t = |s: i64| Timestamp::from_secs(1_800_000_000 + s);
        let opened = |s: i64| {
            Decision::opened(
                t(s),
                "n1",
                "disk_failure",
                Severity::Critical,
                "d.rhai",
                None,
            )
        };
        open()
            .record(&mut Write {
                entries: vec![
                    (opened(0), None),
                    (Decision::resolved(t(1), "n1", "disk_failure"), None),
                    (opened(2), None),
                    (opened(0), None),
                    (Decision::resolved(t(3), "n2", "disk_failure"), None),
                ],
                ..Write::default()
            })
            .unwrap();
        let j = open();
        let all = j.faults(None, Some("n1")).unwrap();
        let spans: Vec<_> = all.iter().map(|f| (f.opened_at, f.resolved_at)).collect();
        assert_eq!(
            spans,
            [(t(0), None), (t(2), None)],
            "the repeat of t0 reopens it"
        );
        assert_eq!(j.decisions(0, 10).unwrap().len(), 5);
    }

    fn what_the_rules_count_and_the_input_survive_reopening(open: Open) {
        let t = |s: i64| Timestamp::from_secs(1_800_000_000 + s);
        let labels = vec![("rack".to_string(), "r1".to_string())];
        {
            let mut j = open();
            let mut seen = BTreeMap::new();
            seen.insert("n1".to_string(), (labels.clone(), t(1)));
            seen.insert("n2".to_string(), (Vec::new(), t(2)));
            j.record(&mut Write {
                history: vec![
                    ("n1".into(), "disk.io.error".into(), t(1)),
                    ("n2".into(), "disk.io.error".into(), t(2)),
                ],
                seen,
                inputs: vec![
                    (t(1), Input::Tick),
                    (
                        t(2),
                        Input::ReleaseHold {
                            label: "rack".into(),
                            value: "r1".into(),
                        },
                    ),
                ],
                quotas: vec![
                    ("cordon".into(), None, 7),
                    ("cordon".into(), Some("r1".into()), 9),
                ],
                entries: (0..5)
                    .map(|i| {
                        let node = if i % 2 == 0 { "n1" } else { "n2" };
                        let d = Decision::action(
                            t(i),
                            node,
                            "disk_failure",
                            "cordon",
                            Outcome::RateLimited,
                            Some(format!("try {i}")),
                        );
                        (d, None)
                    })
                    .collect(),
                ..Write::default()
            })
            .unwrap();
            // n2 is forgotten: its history and last-seen go.
            j.record(&mut Write {
                forgotten: vec!["n2".into()],
                quotas: vec![("cordon".into(), None, 8)],
                ..Write::default()
            })
            .unwrap();
        }
        let j = open();
        assert_eq!(
            j.history(t(0)).unwrap(),
            [("n1".to_string(), "disk.io.error".to_string(), t(1))]
        );
        let seen = j.seen().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0.node.as_str(), seen[0].1), ("n1", t(1)));
        assert_eq!(seen[0].0.labels, labels);
        let inputs = j.inputs(0, 10).unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!((inputs[0].1, &inputs[0].2), (t(1), &Input::Tick));
        assert_eq!(j.inputs(inputs[0].0, 10).unwrap().len(), 1);
        assert_eq!(
            j.quotas().unwrap(),
            [
                ("cordon".to_string(), None, 8),
                ("cordon".to_string(), Some("r1".to_string()), 9)
            ]
        );
        let of_n1 = j.decisions_of("n1", 0, 10).unwrap();
        assert_eq!(
            of_n1
                .iter()
                .map(|d| d.decision.reason.clone().unwrap())
                .collect::<Vec<_>>(),
            ["try 0", "try 2", "try 4"]
        );
        assert_eq!(j.decisions_of("n1", of_n1[0].seq, 1).unwrap().len(), 1);
        let states = j.action_states("n2", "disk_failure", t(0)).unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(
            (states[0].last.as_str(), states[0].passed),
            ("rate_limited", false)
        );
        assert_eq!(j.openings(t(0)).unwrap(), []);
        assert!(j.writable());
    }
}
