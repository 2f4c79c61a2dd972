//! `remedy run` over HTTP: ingestion throughput with JSON-lines batches,
//! and the latency from request to journaled decision at 1,000 signals/s.
//! Side by side, the same signals replayed in-process give the rate the
//! HTTP path is measured against.
//!
//! `cargo bench --bench ingest` (release binary, loopback, a temp journal).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use remedy::synth::{Background, Fleet};
use remedy_engine::Timestamp;

fn post(port: u16, body: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).ok();
    let head = format!(
        "POST /v1/signals HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .expect("send");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("answer");
    r.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn lines(n: usize, nodes: u64, seed: u64) -> Vec<String> {
    let start = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").expect("valid");
    let mut bg = Background::new(Fleet::new(nodes), seed, start, 500);
    (0..n).map(|_| bg.next_line()).collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // nothing to list or test
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(repo)
        .args(["run"])
        .env("REMEDY_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "REMEDY_JOURNAL",
            format!("sqlite://{}", dir.path().join("j.db").display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("remedy run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "remedy run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Throughput: 200 batches of 1,000 JSON lines, two clients.
    let batches: Vec<String> = lines(200_000, 100_000, 1)
        .chunks(1_000)
        .map(|c| c.join("\n"))
        .collect();
    let total: usize = 200_000;
    let started = Instant::now();
    std::thread::scope(|s| {
        for half in batches.chunks(100) {
            s.spawn(move || {
                for b in half {
                    assert_eq!(post(port, b), 202);
                }
            });
        }
    });
    let http_rate = total as f64 / started.elapsed().as_secs_f64();

    // The same signals through the same pipeline in-process (no HTTP, no journal).
    let all = batches.join("\n");
    let rules = std::path::Path::new(repo).join("rules");
    let engine = remedy_engine::Engine::load(
        &rules,
        remedy_engine::Policies::default(),
        &remedy_engine::Options::default(),
    )
    .expect("rules");
    let guards =
        remedy_actions::Guards::new(remedy_actions::GuardConfig::default(), Default::default());
    let mut pipeline = remedy::pipeline::Pipeline::new(engine, guards);
    let display = remedy::replay::Display {
        source: "bench".into(),
        progress: false,
        total_bytes: None,
    };
    let started = Instant::now();
    remedy::replay::replay(
        &mut pipeline,
        std::io::Cursor::new(all.as_bytes()),
        &display,
        &mut std::io::sink(),
        &mut std::io::sink(),
    )
    .expect("replay");
    let replay_rate = total as f64 / started.elapsed().as_secs_f64();

    // Latency at 1,000 signals/s: one signal per request, paced, for 5 s.
    let singles = lines(5_000, 100_000, 2);
    let mut latencies = Vec::with_capacity(singles.len());
    let t0 = Instant::now();
    for (i, line) in singles.iter().enumerate() {
        let due = t0 + Duration::from_millis(i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        assert_eq!(post(port, line), 202);
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let achieved = singles.len() as f64 / t0.elapsed().as_secs_f64();

    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();

    println!("remedy run over HTTP, loopback, release build:");
    println!("  ingestion, 1,000-line batches   {http_rate:>10.0} signals/s");
    println!("  in-process replay, same signals {replay_rate:>10.0} signals/s");
    println!(
        "  HTTP / in-process               {:>10.1}%",
        100.0 * http_rate / replay_rate
    );
    println!(
        "  at {achieved:.0} signals/s, one per request: request -> journaled decision p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}
