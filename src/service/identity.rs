//! `[identity] kubernetes = true`: the API server's node list as aliases.
//! At the start and every [`EVERY`], each node's addresses (InternalIP,
//! ExternalIP, Hostname) go to the decider as names of the node; a failed
//! list is reported (`/readyz`) and tried again next time.

use remedy_actions::executors::kubernetes::NodeDirectory;
use remedy_collectors::{intake::now, Reporter};
use tokio::sync::mpsc;

use super::decider::Command;

/// How often the node list is read.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Reads the node list every [`EVERY`] and hands its aliases to the decider.
pub(super) async fn learn(directory: NodeDirectory, tx: mpsc::Sender<Command>, report: Reporter) {
    let name = format!("kubernetes nodes {}", directory.server());
    let mut ticks = tokio::time::interval(EVERY);
    loop {
        ticks.tick().await;
        match directory.aliases().await {
            Ok(aliases) => {
                report.collected(&name, Ok(now().secs()));
                if tx.send(Command::Aliases(aliases)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("node aliases not read: {e}");
                report.collected(&name, Err(e));
            }
        }
    }
}
