//! Helpers shared by the end-to-end tests (`mod common;` in each; not every
//! test binary uses every helper).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// (status, body) of one HTTP/1.1 request to 127.0.0.1:`port`, with a bearer
/// token if given; status 0 when nothing answered.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    request_bytes(port, method, path, body.as_bytes(), token)
}

/// [`request`] with a body of any bytes (not necessarily UTF-8).
pub fn request_bytes(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A server may answer before the body is all sent (413 for a body over
    // its limit) and close: then the write fails, and the answer is still
    // there to read, as an HTTP client would.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    // Some servers (Prometheus) answer chunked: the body is between the chunk sizes.
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// The body of a chunked HTTP/1.1 response, without the chunk sizes.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `done`, polling every 200 ms; fails the test naming `what`
/// after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies the tree `from` into `to` (created as needed).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let path = entry.expect("directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy file");
        }
    }
}

/// One `remedy run`: the real binary in `dir` (the rules copied there
/// unless `dir/rules` exists), on a free loopback port (or the one given, so
/// a restart keeps its address), with its journal in `dir/remedy.db`, no
/// token, and its stderr in a log file (a pipe nobody reads would block its
/// logging). Killed when dropped. Every end-to-end test starts remedy
/// through this.
pub struct Remedy {
    child: Option<Child>,
    /// The port its HTTP API listens on.
    pub port: u16,
    /// The file its stderr goes to.
    pub log: PathBuf,
}

impl Remedy {
    /// `remedy run` in `dir` with `env` added.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Remedy {
        Remedy::start_with(dir, env, &[])
    }

    /// `remedy run ARGS` in `dir` with `env` added.
    pub fn start_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Remedy {
        Remedy::start_on(free_port(), dir, env, args)
    }

    /// `remedy run ARGS` in `dir` listening on `port`; waits until it
    /// answers /healthz.
    pub fn start_on(port: u16, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Remedy {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        if !dir.join("rules").exists() {
            copy_tree(&repo.join("rules"), &dir.join("rules"));
        }
        let log = dir.join(format!("remedy-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
        cmd.current_dir(dir)
            .arg("run")
            .args(args)
            .env("REMEDY_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "REMEDY_JOURNAL",
                format!("sqlite://{}", dir.join("remedy.db").display()),
            )
            .env_remove("REMEDY_TOKEN")
            .env_remove("REMEDY_RULES")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("remedy starts");
        let mut remedy = Remedy {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while remedy.request("GET", "/healthz", "", None).0 != 200 {
            if let Some(Ok(Some(status))) = remedy.child.as_mut().map(Child::try_wait) {
                panic!(
                    "remedy run exited with {status} before listening on {port}:\n{}",
                    remedy.logged()
                );
            }
            assert!(
                Instant::now() < deadline,
                "remedy run did not come up on port {port}:\n{}",
                remedy.logged()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        remedy
    }

    /// (status, body) of one request; status 0 when nothing answered.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        request(self.port, method, path, body, token)
    }

    /// (status, body) of a GET.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "", None)
    }

    /// The JSON a GET of `path` answers; fails the test unless it is a 200.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// The JSON array at `path` once it is not empty, or as it is after
    /// `timeout` (the caller's assertions say what was missing).
    pub fn nonempty_within(&self, path: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.json(path);
            if !v.as_array().expect("an array").is_empty() || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every journaled decision, in order (all pages of /v1/decisions).
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let v = self.json(&format!("/v1/decisions?since={since}&limit=10000"));
            let batch = v["decisions"].as_array().expect("decisions");
            if batch.is_empty() {
                return all;
            }
            all.extend(batch.iter().cloned());
            since = v["next"].as_i64().expect("next");
        }
    }

    /// Its resident memory (VmRSS) in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// What it has written to stderr so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM, as a service manager would, and waits: (exit
    /// code, stderr).
    pub fn stop(mut self) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let status = child.wait().expect("remedy exits");
        (status.code().unwrap_or(-1), self.logged())
    }

    /// Sends it a signal (`STOP`, `CONT`): a pause, as a stalled machine or
    /// a long GC would pause it.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Its exit code if it exits within `timeout` (without being told to).
    pub fn exits_within(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it with SIGKILL, as a crash would, and waits.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Remedy {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A real Prometheus (Debian's package, which tests/run.sh installs) on a
/// free loopback port with `config` (prometheus.yml) and, if given, one
/// rule file, its storage under `dir`. Killed when dropped.
pub struct Prometheus {
    child: Child,
    /// Its API port.
    pub port: u16,
}

impl Prometheus {
    /// Starts it and waits until it is ready. `config` may name the rule
    /// file as `rules.yml` (written beside it from `rules`).
    pub fn start(dir: &Path, config: &str, rules: Option<&str>) -> Prometheus {
        let binary = "/usr/bin/prometheus";
        assert!(
            Path::new(binary).exists(),
            "prometheus is not installed: run tests/run.sh, which installs it"
        );
        let port = free_port();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus.yml");
        if let Some(rules) = rules {
            std::fs::write(dir.join("rules.yml"), rules).expect("rules.yml");
        }
        let child = Command::new(binary)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while request(port, "GET", "/-/ready", "", None).0 != 200 {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real node exporter (Debian's prometheus-node-exporter) on a free
/// loopback port with `args` added. Killed when dropped.
pub struct NodeExporter {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl NodeExporter {
    /// Starts it and waits until it answers.
    pub fn start(args: &[String]) -> NodeExporter {
        let binary = "/usr/bin/prometheus-node-exporter";
        assert!(
            Path::new(binary).exists(),
            "prometheus-node-exporter is not installed: run tests/run.sh, which installs it"
        );
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node exporter starts");
        let exporter = NodeExporter { child, port };
        wait_for("the node exporter", Duration::from_secs(20), || {
            request(port, "GET", "/metrics", "", None).0 == 200
        });
        exporter
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Alertmanager (Debian's prometheus-alertmanager, which tests/run.sh
/// installs) on a free loopback port, sending every alert, firing and
/// resolved, to remedy's webhook on `remedy_port` within about a second.
/// Killed when dropped.
pub struct Alertmanager {
    child: Child,
    /// Its API port.
    pub port: u16,
}

impl Alertmanager {
    /// Starts it with its config and storage under `dir` and waits until it is ready.
    pub fn start(dir: &Path, remedy_port: u16) -> Alertmanager {
        let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .expect(
                "prometheus-alertmanager is not installed: run tests/run.sh, which installs it",
            );
        let port = free_port();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: remedy\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: remedy\n    webhook_configs:\n      - url: http://127.0.0.1:{remedy_port}/v1/alertmanager\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager starts");
        let am = Alertmanager { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while request(port, "GET", "/-/ready", "", None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "alertmanager did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// Posts alerts (a JSON array, API v2) to it.
    pub fn post(&self, alerts: &str) {
        let (status, body) = request(self.port, "POST", "/api/v2/alerts", alerts, None);
        assert_eq!(status, 200, "{body}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
