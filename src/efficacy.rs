//! The efficacy ledger ([`remedy_engine::efficacy`]) read from a journal,
//! and shown as a table (`remedy report`).

use remedy_engine::efficacy::{Ledger, Row};
use remedy_engine::{Duration, Policies};

use crate::service::journal::{Journal, JournalError};

/// The ledger of every decision a journal holds, in order, judged by
/// `policies`, split by node label `by` (the journal's node labels).
pub fn of_journal(
    journal: &dyn Journal,
    policies: &Policies,
    by: Option<&str>,
) -> Result<Ledger, JournalError> {
    let mut ledger = Ledger::new(policies.clone(), by.map(str::to_string));
    let mut labels: std::collections::HashMap<String, Option<String>> = Default::default();
    journal.each_decision(&mut |d| {
        let mut failed = None;
        ledger.observe(d, |node, label| {
            if let Some(known) = labels.get(node) {
                return known.clone();
            }
            let value = match journal.node(node) {
                Ok(n) => n
                    .labels
                    .into_iter()
                    .find(|(k, _)| k == label)
                    .map(|(_, v)| v),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            };
            labels.insert(node.to_string(), value.clone());
            value
        });
        failed.map_or(Ok(()), Err)
    })?;
    Ok(ledger)
}

/// The ledger as a table: one line per (fault, action[, label value]).
pub fn render(rows: &[Row]) -> String {
    let width =
        |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let fw = width(|r| r.fault.len(), "fault");
    let aw = width(|r| r.action.len(), "action");
    let label = rows.iter().find_map(|r| r.label.clone());
    let vw = label
        .as_ref()
        .map_or(0, |l| width(|r| r.value.as_ref().map_or(0, String::len), l));
    let split = |name: &str| match &label {
        Some(_) => format!("{name:vw$}  "),
        None => String::new(),
    };
    let mut out = format!(
        "{:fw$}  {:aw$}  {}{:>6}  {:>7}  {:>17}  {:>11}  {:>7}\n",
        "fault",
        "action",
        split(label.as_deref().unwrap_or("")),
        "runs",
        "success",
        "median to healthy",
        "recurrences",
        "pending"
    );
    for r in rows {
        let median = r.median_secs.map_or_else(
            || "-".to_string(),
            |s| Duration((s * 1000.0).round() as i64 / 1000 * 1000).to_string(),
        );
        let rate = if r.runs == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", r.success_rate * 100.0)
        };
        out.push_str(&format!(
            "{:fw$}  {:aw$}  {}{:>6}  {:>7}  {:>17}  {:>11}  {:>7}\n",
            r.fault,
            r.action,
            split(r.value.as_deref().unwrap_or("")),
            r.runs,
            rate,
            median,
            r.recurrences,
            r.pending
        ));
    }
    out
}
