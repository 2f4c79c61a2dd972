//! A private PostgreSQL cluster per test: `initdb` in a temporary
//! directory (as the `postgres` user when the tests run as root, which
//! `initdb` refuses), started on a free loopback port with its socket in
//! that directory, stopped (immediately) and removed when dropped.
//!
//! The binaries are looked up in `$PG_BIN`, then in Debian's
//! `/usr/lib/postgresql/15/bin`, then on `PATH`; `tests/run.sh` installs
//! Debian's `postgresql` when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running private cluster; stopped when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run the server's tools as this user (the tests run as root).
    user: Option<&'static str>,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates and starts a cluster, and waits until it accepts connections.
    ///
    /// Panics naming what is missing or with the server's log when it does
    /// not come up.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("a temporary directory for the cluster");
        let root = running_as_root();
        let user = root.then_some("postgres");
        if root {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of {} failed", dir.path().display());
        }
        let data = dir.path().join("data");
        let pg = Postgres {
            bin,
            data,
            port: 0,
            user,
            _dir: dir,
        };
        let out = pg
            .tool("initdb")
            .args([
                "--auth=trust",
                "--username=remedy",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&pg.data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb from {}: {e}", pg.bin.display()));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = pg;
        let mut last = String::new();
        for _ in 0..3 {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => return pg,
                Err(why) => last = why,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn launch(&self) -> Result<(), String> {
        let log = self.data.join("server.log");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.socket_dir().display()
        );
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start: {}{}\n--- {} ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        let deadline = Instant::now() + START_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("port {} never accepted a connection", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The connection URL of its `postgres` database, e.g.
    /// `postgres://remedy@127.0.0.1:40123/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://remedy@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a database and returns its URL (one per test of a suite).
    pub fn database(&self, name: &str) -> String {
        let out = self
            .tool("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "remedy",
                name,
            ])
            .output()
            .expect("createdb runs");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://remedy@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server at once (as a crash would) and starts it again on
    /// the same port: what a client sees when its database restarts.
    pub fn restart(&self) {
        self.stop();
        self.launch()
            .unwrap_or_else(|why| panic!("PostgreSQL did not restart: {why}"));
    }

    fn stop(&self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    fn socket_dir(&self) -> &Path {
        self.data.parent().expect("the cluster's directory")
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").exists() {
        return debian.to_path_buf();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL's initdb was not found in $PG_BIN, /usr/lib/postgresql/15/bin or pg_config \
         --bindir: install Debian's postgresql (tests/run.sh does)"
    );
}
