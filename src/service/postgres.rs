//! The journal in PostgreSQL (`[journal] url = "postgres://..."`): the same
//! content as the SQLite journal, behind the same [`Journal`] trait, for
//! several instances sharing one store (contract 12). The schema is
//! versioned: `remedy_schema` holds the version, and each migration runs
//! in its own transaction.
//!
//! A connection that broke (the server restarted) is opened again at the
//! next call; a write that failed keeps its batch for the next attempt, as
//! the SQLite journal does, so nothing acknowledged is lost.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;

use postgres::{Client, NoTls};
use remedy_actions::Job;
use remedy_engine::{Decision, Duration, Event, Timestamp};

use super::journal::{
    job_row, journaled_row, labels_of, labels_text, scope, ActionState, FaultRow, Journal,
    JournalError, Journaled, KnownNode, Quota, Write, HISTORY_KEPT_MS, KEEP_INPUTS, KEPT_IDS,
};
use crate::pipeline::Input;

/// The migrations, in order; the schema's version is how many have run.
const MIGRATIONS: &[&str] = &[
    // v1: everything the SQLite journal holds at its v10.
    "CREATE TABLE decisions (
        seq BIGSERIAL PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
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
        opened_ms BIGINT NOT NULL,
        resolved_ms BIGINT,
        signal_type TEXT,
        PRIMARY KEY (node, fault, opened_ms)
     );
     CREATE INDEX faults_open ON faults (resolved_ms, node);
     CREATE TABLE nodes (node TEXT PRIMARY KEY, labels TEXT NOT NULL, domain BOOLEAN NOT NULL DEFAULT FALSE);
     CREATE TABLE signal_ids (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE);
     CREATE TABLE jobs (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, json TEXT NOT NULL);
     CREATE TABLE cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
     CREATE TABLE aliases (seq BIGSERIAL PRIMARY KEY, alias TEXT NOT NULL UNIQUE, node TEXT NOT NULL);
     CREATE TABLE history (node TEXT NOT NULL, type TEXT NOT NULL, ts_ms BIGINT NOT NULL);
     CREATE INDEX history_ts ON history (ts_ms);
     CREATE TABLE seen (node TEXT PRIMARY KEY, labels TEXT NOT NULL, last_ms BIGINT NOT NULL);
     CREATE TABLE inputs (seq BIGSERIAL PRIMARY KEY, taken_ms BIGINT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
     CREATE INDEX inputs_taken ON inputs (taken_ms);
     CREATE TABLE quotas (action TEXT NOT NULL, scope TEXT NOT NULL, tat_ns BIGINT NOT NULL, PRIMARY KEY (action, scope));",
    // v2: the leader's lease (`[ha]`): who holds it, its epoch (fencing),
    // and until when, on the database's clock.
    "CREATE TABLE leader (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
     );",
];

/// The PostgreSQL journal.
pub struct Postgres {
    url: String,
    client: RefCell<Option<Client>>,
    keep_inputs: Duration,
    /// `[ha]`: every write checks that this (holder, epoch) still holds the lease.
    fence: Option<(String, i64)>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only where it points.
        f.debug_struct("Postgres")
            .field("at", &redacted(&self.url))
            .finish()
    }
}

/// A connection URL without its password, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl Postgres {
    /// Connects to `url` and brings the schema up to date.
    pub fn open(url: &str) -> Result<Self, JournalError> {
        let journal = Postgres {
            url: url.to_string(),
            client: RefCell::new(None),
            keep_inputs: KEEP_INPUTS,
            fence: None,
        };
        journal.migrate()?;
        Ok(journal)
    }

    /// Keeps inputs for `keep` (behind the newest).
    pub fn keep_inputs(mut self, keep: Duration) -> Self {
        self.keep_inputs = keep;
        self
    }

    /// Writes only while `holder` holds the lease at `epoch`: a leader
    /// deposed (paused, partitioned) can no longer write.
    pub fn fenced(mut self, holder: &str, epoch: i64) -> Self {
        self.fence = Some((holder.to_string(), epoch));
        self
    }

    /// The connection, opened (again) if there is none or it broke.
    fn client(&self) -> Result<RefMut<'_, Client>, JournalError> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(Client::connect(&self.url, NoTls)?);
        }
        Ok(RefMut::map(slot, |c| c.as_mut().expect("just connected")))
    }

    /// Runs `f`; a broken connection is dropped so the next call reconnects.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, JournalError> {
        let result = f(&mut *self.client()?);
        if result.is_err() && self.client.borrow().as_ref().is_some_and(Client::is_closed) {
            *self.client.borrow_mut() = None;
        }
        Ok(result?)
    }

    /// (node, what, when) rows of `sql` since `since` (its `$1`).
    fn node_events(
        &self,
        sql: &str,
        since: Timestamp,
    ) -> Result<Vec<(String, String, Timestamp)>, JournalError> {
        let rows = self.read(|c| c.query(sql, &[&since.0]))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), Timestamp(r.get(2))))
            .collect())
    }

    /// Runs the read `f`, once more on a new connection if the old one had
    /// broken (the server restarted since the last call). Writes are not
    /// tried again here: their caller keeps the batch and sends it again.
    fn read<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, JournalError> {
        match self.with(&f) {
            Err(JournalError::Postgres(_)) if self.client.borrow().is_none() => self.with(f),
            result => result,
        }
    }

    fn migrate(&self) -> Result<(), JournalError> {
        self.with(|c| {
            let exists: bool = c
                .query_one("SELECT to_regclass('remedy_schema') IS NOT NULL", &[])?
                .get(0);
            if !exists {
                // Two instances starting at once: one creates it, the other skips.
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS remedy_schema (version INTEGER NOT NULL)",
                )?;
            }
            let mut tx = c.transaction()?;
            // One instance migrates at a time; the others wait and see it done.
            tx.batch_execute("LOCK TABLE remedy_schema IN EXCLUSIVE MODE")?;
            let version: i32 = match tx.query_opt("SELECT version FROM remedy_schema", &[])? {
                Some(row) => row.get(0),
                None => {
                    tx.execute("INSERT INTO remedy_schema (version) VALUES (0)", &[])?;
                    0
                }
            };
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
                tx.batch_execute(sql)?;
                tx.execute("UPDATE remedy_schema SET version = $1", &[&(i as i32 + 1)])?;
            }
            tx.commit()
        })
    }
}

impl Drop for Postgres {
    /// The client closes its connection by blocking on its own runtime,
    /// which a thread inside the service's runtime may not do: it is
    /// dropped on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

fn journaled(rows: Vec<postgres::Row>) -> Result<Vec<Journaled>, JournalError> {
    rows.iter()
        .map(|r| journaled_row(r.get(0), r.get(1)))
        .collect()
}

/// A batch of decisions as columns, for one `INSERT ... UNNEST`.
#[derive(Default)]
struct DecisionRows {
    ts: Vec<i64>,
    event: Vec<&'static str>,
    node: Vec<String>,
    fault: Vec<String>,
    action: Vec<Option<String>>,
    outcome: Vec<Option<&'static str>>,
    json: Vec<String>,
}

impl DecisionRows {
    fn push(&mut self, d: &Decision) {
        self.ts.push(d.ts.0);
        self.event.push(d.event.as_str());
        self.node.push(d.node.clone());
        self.fault.push(d.fault.clone());
        self.action.push(d.action.clone());
        self.outcome.push(d.outcome.map(|o| o.as_str()));
        self.json.push(d.to_json());
    }
}

impl Journal for Postgres {
    fn cursor(&self, name: &str) -> Result<i64, JournalError> {
        self.read(|c| {
            Ok(
                c.query_opt("SELECT seq FROM cursors WHERE name = $1", &[&name])?
                    .map_or(0, |r| r.get(0)),
            )
        })
    }

    fn set_cursor(&mut self, name: &str, seq: i64) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO cursors (name, seq) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                &[&name, &seq],
            )
            .map(|_| ())
        })
    }

    fn record(&mut self, write: &mut Write) -> Result<(), JournalError> {
        if write.is_empty() {
            return Ok(());
        }
        let keep_inputs = self.keep_inputs;
        let fence = self.fence.clone();
        let fenced = std::cell::Cell::new(false);
        let written = self.with(|c| {
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
            let mut tx = c.transaction()?;
            if let Some((holder, epoch)) = &fence {
                // A new leader's takeover waits for this transaction, and
                // this one sees whether it already happened.
                let holds = tx.query_opt(
                    "SELECT 1 FROM leader WHERE id = 1 AND holder = $1 AND epoch = $2 FOR SHARE",
                    &[holder, epoch],
                )?;
                if holds.is_none() {
                    fenced.set(true);
                    return tx.rollback();
                }
            }
            for (action, domain, tat) in quotas {
                tx.execute(
                    "INSERT INTO quotas (action, scope, tat_ns) VALUES ($1, $2, $3)
                     ON CONFLICT (action, scope) DO UPDATE SET tat_ns = excluded.tat_ns",
                    &[action, &scope(domain), &(*tat as i64)],
                )?;
            }
            // Many rows go in one statement each (arrays unnested in
            // order): one round trip per table, not per row.
            if !inputs.is_empty() {
                let (mut taken, mut kinds, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
                for (at, input) in inputs {
                    let (kind, body) = input.to_row();
                    taken.push(at.0);
                    kinds.push(kind);
                    bodies.push(body);
                }
                tx.execute(
                    "INSERT INTO inputs (taken_ms, kind, body)
                     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[])",
                    &[&taken, &kinds, &bodies],
                )?;
                if let Some(newest) = inputs.iter().map(|i| i.0 .0).max() {
                    let oldest = newest.saturating_sub(keep_inputs.0);
                    tx.execute("DELETE FROM inputs WHERE taken_ms < $1", &[&oldest])?;
                }
            }
            if !forgotten.is_empty() {
                tx.execute("DELETE FROM seen WHERE node = ANY($1)", &[forgotten])?;
                tx.execute("DELETE FROM history WHERE node = ANY($1)", &[forgotten])?;
            }
            for job in started {
                let json = serde_json::to_string(job).unwrap_or_default();
                tx.execute(
                    "INSERT INTO jobs (id, json) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET json = excluded.json",
                    &[&job.id, &json],
                )?;
            }
            for id in finished {
                tx.execute("DELETE FROM jobs WHERE id = $1", &[id])?;
            }
            if !nodes.is_empty() {
                // Each node once (its last word), as ON CONFLICT needs within one statement.
                let last: BTreeMap<&str, &KnownNode> =
                    nodes.iter().map(|n| (n.node.as_str(), n)).collect();
                let names: Vec<&str> = last.keys().copied().collect();
                let labels: Vec<String> = last.values().map(|n| labels_text(&n.labels)).collect();
                let domains: Vec<bool> = last.values().map(|n| n.domain).collect();
                tx.execute(
                    "INSERT INTO nodes (node, labels, domain)
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BOOLEAN[])
                     ON CONFLICT (node) DO UPDATE SET labels = excluded.labels, domain = excluded.domain",
                    &[&names, &labels, &domains],
                )?;
            }
            if !history.is_empty() {
                let nodes: Vec<&str> = history.iter().map(|h| h.0.as_str()).collect();
                let types: Vec<&str> = history.iter().map(|h| h.1.as_str()).collect();
                let ts: Vec<i64> = history.iter().map(|h| h.2 .0).collect();
                tx.execute(
                    "INSERT INTO history (node, type, ts_ms)
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[])",
                    &[&nodes, &types, &ts],
                )?;
                if let Some(newest) = history.iter().map(|h| h.2 .0).max() {
                    tx.execute(
                        "DELETE FROM history WHERE ts_ms < $1",
                        &[&(newest - HISTORY_KEPT_MS)],
                    )?;
                }
            }
            if !seen.is_empty() {
                // A map: each node once, as ON CONFLICT needs within one statement.
                let nodes: Vec<&str> = seen.keys().map(String::as_str).collect();
                let labels: Vec<String> = seen.values().map(|(l, _)| labels_text(l)).collect();
                let last: Vec<i64> = seen.values().map(|(_, t)| t.0).collect();
                tx.execute(
                    "INSERT INTO seen (node, labels, last_ms)
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[])
                     ON CONFLICT (node) DO UPDATE SET labels = excluded.labels, last_ms = excluded.last_ms",
                    &[&nodes, &labels, &last],
                )?;
            }
            for (alias, node) in aliases {
                // A re-learned alias moves to the end: the newest word counts at a restart.
                tx.execute(
                    "INSERT INTO aliases (alias, node) VALUES ($1, $2)
                     ON CONFLICT (alias) DO UPDATE SET node = excluded.node,
                     seq = nextval(pg_get_serial_sequence('aliases', 'seq'))",
                    &[alias, node],
                )?;
            }
            if !ids.is_empty() {
                tx.execute(
                    "INSERT INTO signal_ids (id) SELECT * FROM UNNEST($1::TEXT[])
                     ON CONFLICT (id) DO NOTHING",
                    &[ids],
                )?;
                tx.execute(
                    "DELETE FROM signal_ids WHERE seq <= (SELECT MAX(seq) FROM signal_ids) - $1",
                    &[&(KEPT_IDS as i64)],
                )?;
            }
            if !entries.is_empty() {
                let mut rows = DecisionRows::default();
                for (d, _) in entries {
                    rows.push(d);
                }
                tx.execute(
                    "INSERT INTO decisions (ts_ms, event, node, fault, action, outcome, json)
                     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[],
                                          $5::TEXT[], $6::TEXT[], $7::TEXT[])",
                    &[
                        &rows.ts,
                        &rows.event,
                        &rows.node,
                        &rows.fault,
                        &rows.action,
                        &rows.outcome,
                        &rows.json,
                    ],
                )?;
                let open = tx.prepare(
                    "INSERT INTO faults (node, fault, severity, rule, reason, opened_ms, signal_type)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (node, fault, opened_ms) DO UPDATE SET
                       resolved_ms = NULL, severity = excluded.severity, rule = excluded.rule,
                       reason = excluded.reason, signal_type = excluded.signal_type",
                )?;
                let close = tx.prepare(
                    "UPDATE faults SET resolved_ms = $3
                     WHERE node = $1 AND fault = $2 AND resolved_ms IS NULL",
                )?;
                // Each fault at most once in the batch (the usual case):
                // all openings in one statement, all resolutions in
                // another. Else row by row, in order: an occurrence may
                // open, resolve and open again within one batch.
                let mut once = std::collections::HashSet::new();
                let faults: Vec<&(Decision, Option<String>)> = entries
                    .iter()
                    .filter(|(d, _)| matches!(d.event, Event::FaultOpened | Event::FaultResolved))
                    .collect();
                let batched = faults
                    .iter()
                    .all(|(d, _)| once.insert((d.node.as_str(), d.fault.as_str())));
                if batched {
                    let opened: Vec<_> = faults
                        .iter()
                        .filter(|(d, _)| d.event == Event::FaultOpened)
                        .collect();
                    let closed: Vec<_> = faults
                        .iter()
                        .filter(|(d, _)| d.event == Event::FaultResolved)
                        .collect();
                    if !opened.is_empty() {
                        let node: Vec<&str> = opened.iter().map(|(d, _)| d.node.as_str()).collect();
                        let fault: Vec<&str> =
                            opened.iter().map(|(d, _)| d.fault.as_str()).collect();
                        let severity: Vec<Option<&str>> = opened
                            .iter()
                            .map(|(d, _)| d.severity.map(|s| s.as_str()))
                            .collect();
                        let rule: Vec<Option<&str>> =
                            opened.iter().map(|(d, _)| d.rule.as_deref()).collect();
                        let reason: Vec<Option<&str>> =
                            opened.iter().map(|(d, _)| d.reason.as_deref()).collect();
                        let at: Vec<i64> = opened.iter().map(|(d, _)| d.ts.0).collect();
                        let types: Vec<Option<&str>> =
                            opened.iter().map(|(_, t)| t.as_deref()).collect();
                        tx.execute(
                            "INSERT INTO faults (node, fault, severity, rule, reason, opened_ms, signal_type)
                             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[],
                                                  $5::TEXT[], $6::BIGINT[], $7::TEXT[])
                             ON CONFLICT (node, fault, opened_ms) DO UPDATE SET
                               resolved_ms = NULL, severity = excluded.severity, rule = excluded.rule,
                               reason = excluded.reason, signal_type = excluded.signal_type",
                            &[&node, &fault, &severity, &rule, &reason, &at, &types],
                        )?;
                    }
                    if !closed.is_empty() {
                        let node: Vec<&str> = closed.iter().map(|(d, _)| d.node.as_str()).collect();
                        let fault: Vec<&str> =
                            closed.iter().map(|(d, _)| d.fault.as_str()).collect();
                        let at: Vec<i64> = closed.iter().map(|(d, _)| d.ts.0).collect();
                        tx.execute(
                            "UPDATE faults f SET resolved_ms = c.at
                             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS c(node, fault, at)
                             WHERE f.node = c.node AND f.fault = c.fault AND f.resolved_ms IS NULL",
                            &[&node, &fault, &at],
                        )?;
                    }
                }
                for (d, signal_type) in entries.iter().filter(|_| !batched) {
                    match d.event {
                        Event::FaultOpened => {
                            let severity = d.severity.map(|s| s.as_str());
                            tx.execute(
                                &open,
                                &[
                                    &d.node,
                                    &d.fault,
                                    &severity,
                                    &d.rule,
                                    &d.reason,
                                    &d.ts.0,
                                    signal_type,
                                ],
                            )?;
                        }
                        Event::FaultResolved => {
                            tx.execute(&close, &[&d.node, &d.fault, &d.ts.0])?;
                        }
                        Event::Action
                        | Event::FaultStale
                        | Event::FaultUnverified
                        | Event::Step => {}
                    }
                }
            }
            tx.commit()
        });
        if fenced.get() {
            let (holder, epoch) = self.fence.clone().unwrap_or_default();
            return Err(JournalError::Fenced { holder, epoch });
        }
        written?;
        write.clear();
        Ok(())
    }

    fn running_jobs(&self) -> Result<Vec<Job>, JournalError> {
        let rows = self.read(|c| c.query("SELECT id, json FROM jobs ORDER BY seq", &[]))?;
        rows.iter().map(|r| job_row(r.get(0), r.get(1))).collect()
    }

    fn recent_ids(&self, limit: usize) -> Result<Vec<String>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT id FROM (SELECT seq, id FROM signal_ids ORDER BY seq DESC LIMIT $1) t ORDER BY seq",
                &[&(limit as i64)],
            )
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn openings(&self, since: Timestamp) -> Result<Vec<(String, String, Timestamp)>, JournalError> {
        self.node_events(
            "SELECT node, fault, opened_ms FROM faults WHERE opened_ms >= $1 ORDER BY opened_ms",
            since,
        )
    }

    fn history(&self, since: Timestamp) -> Result<Vec<(String, String, Timestamp)>, JournalError> {
        self.node_events(
            "SELECT node, type, ts_ms FROM history WHERE ts_ms >= $1 ORDER BY ts_ms",
            since,
        )
    }

    fn seen(&self) -> Result<Vec<(KnownNode, Timestamp)>, JournalError> {
        let rows =
            self.read(|c| c.query("SELECT node, labels, last_ms FROM seen ORDER BY node", &[]))?;
        Ok(rows
            .iter()
            .map(|r| {
                let node = KnownNode {
                    node: r.get(0),
                    labels: labels_of(r.get(1)),
                    domain: false,
                };
                (node, Timestamp(r.get(2)))
            })
            .collect())
    }

    fn aliases(&self) -> Result<Vec<(String, String)>, JournalError> {
        let rows = self.read(|c| c.query("SELECT alias, node FROM aliases ORDER BY seq", &[]))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn faults(
        &self,
        open: Option<bool>,
        node: Option<&str>,
    ) -> Result<Vec<FaultRow>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT node, fault, severity, rule, reason, opened_ms, resolved_ms, signal_type FROM faults
                 WHERE ($1::BOOLEAN IS NULL OR ($1 AND resolved_ms IS NULL) OR (NOT $1 AND resolved_ms IS NOT NULL))
                   AND ($2::TEXT IS NULL OR node = $2)
                 ORDER BY opened_ms, node, fault",
                &[&open, &node],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| FaultRow {
                node: r.get(0),
                fault: r.get(1),
                severity: r.get(2),
                rule: r.get(3),
                reason: r.get(4),
                opened_at: Timestamp(r.get(5)),
                resolved_at: r.get::<_, Option<i64>>(6).map(Timestamp),
                signal_type: r.get(7),
            })
            .collect())
    }

    fn decisions(&self, since: i64, limit: usize) -> Result<Vec<Journaled>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT seq, json FROM decisions WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&since, &(limit as i64)],
            )
        })?;
        journaled(rows)
    }

    fn decisions_of(
        &self,
        node: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Journaled>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT seq, json FROM decisions WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&node, &since, &(limit as i64)],
            )
        })?;
        journaled(rows)
    }

    fn writable(&self) -> bool {
        // A real write, not a read: a standby or a full disk answers reads.
        self.read(|c| {
            c.execute(
                "INSERT INTO cursors (name, seq) VALUES ('.probe', 0)
                 ON CONFLICT (name) DO UPDATE SET seq = 0",
                &[],
            )
        })
        .is_ok()
    }

    fn action_states(
        &self,
        node: &str,
        fault: &str,
        since: Timestamp,
    ) -> Result<Vec<ActionState>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT d.action,
                        (SELECT outcome FROM decisions l WHERE l.node = d.node AND l.fault = d.fault
                           AND l.action = d.action AND l.ts_ms >= $3 ORDER BY l.seq DESC LIMIT 1),
                        COALESCE(BOOL_OR(d.outcome IN ('dry_run', 'executed')), FALSE),
                        (SELECT l.json FROM decisions l WHERE l.node = d.node
                           AND l.fault = d.fault AND l.action = d.action AND l.ts_ms >= $3
                           ORDER BY l.seq DESC LIMIT 1)
                 FROM decisions d
                 WHERE d.node = $1 AND d.fault = $2 AND d.ts_ms >= $3 AND d.action IS NOT NULL
                 GROUP BY d.action, d.node, d.fault ORDER BY MIN(d.seq)",
                &[&node, &fault, &since.0],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| ActionState::of_row(r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    fn node(&self, node: &str) -> Result<KnownNode, JournalError> {
        let row = self
            .read(|c| c.query_opt("SELECT labels, domain FROM nodes WHERE node = $1", &[&node]))?;
        let (labels, domain) = row.map_or((Vec::new(), false), |r| (labels_of(r.get(0)), r.get(1)));
        Ok(KnownNode {
            node: node.to_string(),
            labels,
            domain,
        })
    }

    fn inputs(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Timestamp, Input)>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT seq, taken_ms, kind, body FROM inputs WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &(limit as i64)],
            )
        })?;
        rows.into_iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let kind: String = r.get(2);
                let input = Input::from_row(&kind, r.get(3))
                    .map_err(|reason| JournalError::CorruptInput { seq, reason })?;
                Ok((seq, Timestamp(r.get(1)), input))
            })
            .collect()
    }

    fn quotas(&self) -> Result<Vec<Quota>, JournalError> {
        let rows = self.read(|c| {
            c.query(
                "SELECT action, scope, tat_ns FROM quotas ORDER BY action, scope",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let scope: String = r.get(1);
                let domain = scope.strip_prefix("per:").map(str::to_string);
                (r.get(0), domain, r.get::<_, i64>(2).max(0) as u64)
            })
            .collect())
    }
}
