//! The decisions topic (`[kafka] decisions`): follows the journal and
//! publishes every decision in journal order (contract section 4, key =
//! node). The position is journaled after each confirmed publish.

use std::sync::Arc;

use remedy_engine::{Backoff, Decision, Duration};
use tokio::sync::Notify;

use super::decider::now;
use super::metrics::Metrics;
use crate::config::JournalUrl;

/// Publishes every journaled decision to the decisions topic, in journal
/// order, from where the last run left off (the position is journaled after
/// each confirmed publish: at-least-once, nothing skipped across restarts).
/// A publish that fails is tried again, never dropped.
pub(super) async fn publish(
    publisher: remedy_actions::publish::Publisher,
    journal: JournalUrl,
    written: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = format!("decisions {}", publisher.topic());
    let cursor = format!("topic:{}", publisher.topic());
    // The journal's calls block: off the async workers.
    let mut store = match tokio::task::block_in_place(|| super::journal::reader(&journal)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("decisions topic: cannot open the journal: {e}");
            return;
        }
    };
    let mut since = tokio::task::block_in_place(|| store.cursor(&cursor)).unwrap_or(0);
    // A refused publish waits 200 ms doubling up to 30 s, then again from the start once one succeeds.
    const RETRY: Backoff = Backoff::new(Duration(200), Duration(30_000));
    let mut delays = RETRY.delays();
    loop {
        let batch = match tokio::task::block_in_place(|| store.decisions(since, 5000)) {
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
                if let Err(e) = tokio::task::block_in_place(|| store.set_cursor(&cursor, since)) {
                    tracing::warn!("decisions topic: saving the position: {e}");
                }
                metrics.collected(&name, Ok(now().secs()));
                delays = RETRY.delays();
            }
            Err(e) => {
                let backoff = delays.next().unwrap_or_default();
                tracing::warn!("decisions topic: {e}; retrying in {backoff:?}");
                metrics.collected(&name, Err(e.to_string()));
                if *stop.borrow() {
                    break;
                }
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
