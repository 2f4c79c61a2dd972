//! The decisions topic (`[kafka] decisions`): follows the journal and
//! publishes every decision in journal order (contract section 4, key =
//! node). The position is journaled after each confirmed publish.

use std::path::PathBuf;
use std::sync::Arc;

use remedy_engine::Decision;
use tokio::sync::Notify;

use super::decider::now;
use super::journal::{Journal, Sqlite};
use super::metrics::Metrics;

/// Publishes every journaled decision to the decisions topic, in journal
/// order, from where the last run left off (the position is journaled after
/// each confirmed publish: at-least-once, nothing skipped across restarts).
/// A publish that fails is tried again, never dropped.
pub(super) async fn publish(
    publisher: remedy_actions::publish::Publisher,
    journal: PathBuf,
    written: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = format!("decisions {}", publisher.topic());
    let cursor = format!("topic:{}", publisher.topic());
    let mut store = match Sqlite::open(&journal) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("decisions topic: cannot open the journal: {e}");
            return;
        }
    };
    let mut since = store.cursor(&cursor).unwrap_or(0);
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let batch = match store.decisions(since, 5000) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("decisions topic: reading the journal: {e}");
                Vec::new()
            }
        };
        if batch.is_empty() {
            if *stop.borrow() {
                break;
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), written.notified()).await;
            continue;
        }
        let last = batch.last().map_or(since, |j| j.seq);
        let decisions: Vec<Decision> = batch.into_iter().map(|j| j.decision).collect();
        match publisher.publish(&decisions).await {
            Ok(()) => {
                since = last;
                if let Err(e) = store.set_cursor(&cursor, since) {
                    tracing::warn!("decisions topic: saving the position: {e}");
                }
                metrics.collected(&name, Ok(now().secs()));
                backoff = std::time::Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!("decisions topic: {e}; retrying in {backoff:?}");
                metrics.collected(&name, Err(e.to_string()));
                if *stop.borrow() {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}
