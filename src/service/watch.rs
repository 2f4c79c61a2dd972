//! The rules watcher: reloads the rules when a file under the rules
//! directory changes, and on SIGHUP; the decider swaps them in (the old
//! rules stay when the new ones do not compile).

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::decider::Command;

/// What identifies the rules on disk: every `.rhai` file's path, size and mtime.
fn fingerprint(dir: &std::path::Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rhai") {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Reloads the rules when a file under `dir` changes, and on SIGHUP.
pub(super) async fn watch(dir: PathBuf, tx: mpsc::Sender<Command>) {
    let mut last = fingerprint(&dir);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    loop {
        #[cfg(unix)]
        let reload = tokio::select! {
            _ = every.tick() => false,
            _ = hangup.recv() => true,
        };
        #[cfg(not(unix))]
        let reload = {
            every.tick().await;
            false
        };
        let now = fingerprint(&dir);
        if reload || now != last {
            last = now;
            if tx.send(Command::Reload).await.is_err() {
                break;
            }
        }
    }
}
