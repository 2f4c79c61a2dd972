//! `remedy`: fault remediation for large fleets. See `remedy --help`.

use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use remedy::config::Config;
use remedy::pipeline::{Mode, Pipeline};
use remedy::replay::{self, Display};
use remedy::ruletest;
use remedy::simulate::{Scenario, Spec};
use remedy_engine::{Engine, LoadError, Options, RuleSet};

/// Signals in, rules classify, guarded actions out.
#[derive(Parser)]
#[command(name = "remedy", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 rules invalid, tests failed or diff found differences, 2 usage, missing file or invalid config."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The service: signals in, decisions journaled, guarded actions carried out
    ///
    /// Signals from HTTP, Alertmanager, Kafka, Prometheus and scrapes -> rules
    /// -> fault lifecycle -> guarded actions, carried out by their executors
    /// once `dry_run = false` (dry-run by default); every decision journaled
    /// (and published to Kafka), until SIGINT/SIGTERM.
    ///
    /// With `[ha]` and a PostgreSQL journal, several instances share it: one
    /// leads, the others stand by (`/readyz` 503, role standby) and take over
    /// once its lease lapses; a leader that loses its lease exits with 3.
    ///
    /// With `[[node_class]]`, nodes converge to their desired component
    /// versions and readiness gates, step by step and paced per class
    /// (`GET /v1/rollouts`, `POST /v1/rollouts/CLASS/resume`).
    Run {
        /// Configuration file (TOML); without it: 127.0.0.1:9477, ./rules, ./remedy.db.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Log format on stderr (`RUST_LOG` sets the level; default info).
        #[arg(long, value_enum, default_value = "human")]
        log_format: remedy::service::LogFormat,
    },
    /// Compile every rule; print `path:line:col: message` for each problem.
    ///
    /// With `--config`, first check the whole config file as every command
    /// reads it (unknown keys, bad values, undefined actions: exit 2 naming
    /// file, line, column and key), then the rules it names.
    Check {
        /// Directory of *.rhai rules (default: the config's `rules`, else `rules`).
        #[arg(value_name = "RULES_DIR")]
        rules_dir: Option<PathBuf>,
        /// Configuration file (TOML) to check, with its rules.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the rule test cases (`X.test.yaml` beside `X.rhai`).
    Test {
        /// Directory of *.rhai rules and their tests.
        #[arg(value_name = "RULES_DIR", default_value = "rules")]
        rules_dir: PathBuf,
    },
    /// Feed recorded signals (JSON lines, `-` for stdin) through rules,
    /// lifecycle and guards in event time (every action dry-run, nothing
    /// journaled); print decisions as JSON lines.
    Replay {
        #[command(flatten)]
        input: InputArgs,
        /// Configuration file (TOML): rules directory, policies, guards, silences.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Rules directory, overriding the config's `rules`.
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
        /// No progress bar and no closing summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Replay the same signals through two rule sets (or configs) and show
    /// what would be decided differently, and for each `[[node_class]]`
    /// whose desired versions change, which nodes would converge in how many
    /// waves. Exit 0 when identical, 1 when not.
    Diff {
        /// The current rules: a rules directory, or a config file (TOML)
        /// naming its rules, policies and guards.
        #[arg(value_name = "OLD")]
        old: PathBuf,
        /// The proposed rules: a directory or a config file, like OLD.
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Recorded signals, one JSON object per line; `-` reads stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Policies and guards for a side given as a rules directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON object per difference instead of the table (summary on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Write a fleet-scale fault scenario as signals (JSON lines, event
    /// time) to stdout, to pipe into `replay` or `diff`; `rollout` instead
    /// runs a config's `[[node_class]]` over a simulated fleet whose agents
    /// answer the upgrades, and prints the decisions.
    Simulate {
        /// The scenario.
        #[arg(value_name = "SCENARIO")]
        scenario: Scenario,
        /// Nodes in the fleet (racks of 40, clusters of 2,000).
        #[arg(long, default_value_t = 2_000)]
        nodes: u64,
        /// Seed of every random choice: the same seed gives the same stream.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Length of the run in minutes of event time.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Background signals per second (default: one per node every 30 s).
        #[arg(long)]
        rate: Option<u64>,
        /// `rollout`: the configuration whose `[[node_class]]` the fleet
        /// converges to (rules, policies and guards too).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// `rollout`: nodes whose upgrade fails.
        #[arg(long, default_value_t = 3)]
        fail: u64,
        /// `rollout`: a tenth of the fleet loses power halfway through.
        #[arg(long)]
        storm: bool,
    },
    /// The efficacy ledger: per fault class and action, how often the repair
    /// worked (the fault resolved within the policy's `verify`, 24h without
    /// one, and did not open again within 7 days), the median time to
    /// healthy, and recurrences. Runs still within their window are pending
    /// and count for nothing yet.
    Report {
        #[command(flatten)]
        input: InputArgs,
        /// Configuration file (TOML): rules, policies (their `verify`), guards.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Split the ledger by this node label, e.g. a hardware model
        /// (default: the config's `[efficacy] by`).
        #[arg(long, value_name = "LABEL")]
        by: Option<String>,
        /// The ledger as JSON, for tools.
        #[arg(long)]
        json: bool,
    },
    /// One node's story in time order: the signals it sent, what the
    /// rules answered, its faults, every action and its guard's verdict;
    /// then its state (open faults, held actions, its domains' budgets).
    Explain {
        /// The node.
        #[arg(value_name = "NODE")]
        node: String,
        #[command(flatten)]
        input: InputArgs,
        /// Configuration file (TOML): rules, policies, guards.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Stop at this time (RFC 3339) and show the state then.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The story as JSON, for tools.
        #[arg(long)]
        json: bool,
    },
}

/// What `replay`, `explain` and `report` read: recorded signals, or what a
/// `remedy run` journaled.
#[derive(clap::Args, Debug)]
struct InputArgs {
    /// Recorded signals, one JSON object per line (replayed in event time);
    /// `-` reads stdin.
    #[arg(value_name = "FILE", required_unless_present = "journal")]
    file: Option<PathBuf>,
    /// Instead of FILE: a `remedy run` journal (`sqlite://PATH` or PATH).
    /// Its input is replayed at the times it was taken in, with the
    /// service's settings from --config: what `run` decided.
    #[arg(long, value_name = "URL", conflicts_with = "file")]
    journal: Option<String>,
}

/// A failure that ends the command with a one-line message and an exit code.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

/// Rules that do not compile: every problem on its own line, exit `code`.
fn invalid_rules(e: LoadError, code: u8) -> Failure {
    let code = match e {
        LoadError::Dir { .. } => 2,
        _ => code,
    };
    Failure {
        code,
        message: e.to_string(),
    }
}

fn check(dir: Option<&Path>, config: Option<&Path>) -> Result<(), Failure> {
    let options = match config {
        Some(path) => {
            let config = load_config(Some(path))?;
            println!(
                "{}: valid ({} actions, {} fault policies)",
                path.display(),
                config.actions.len(),
                config.faults.len()
            );
            let dir = dir.map_or_else(|| config.rules.clone(), Path::to_path_buf);
            return check_rules(&dir, &config.engine_options());
        }
        None => Options::default(),
    };
    check_rules(dir.unwrap_or(Path::new("rules")), &options)
}

fn check_rules(dir: &Path, options: &Options) -> Result<(), Failure> {
    let rules = RuleSet::load(dir, &options.sandbox, Engine::world(options))
        .map_err(|e| invalid_rules(e, 1))?;
    println!("{}: {} rules valid", dir.display(), rules.len());
    Ok(())
}

fn test(dir: &Path) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let totals =
        ruletest::run(dir, &mut out, &mut io::stderr()).map_err(|e| invalid_rules(e, 1))?;
    if totals.failed > 0 {
        return Err(Failure {
            code: 1,
            message: String::new(),
        });
    }
    Ok(())
}

/// A config file, or the embedded default.
fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    let config = match path {
        Some(path) => Config::load(path).map_err(|e| usage(e.to_string()))?,
        None => Config::default(),
    };
    Ok(config)
}

/// Rules, lifecycle and guard chain as `config` says; `rules` overrides its
/// rules. Only the service (`live`) acts: offline commands are always dry-run.
fn pipeline(config: &Config, rules: Option<&Path>, live: bool) -> Result<Pipeline, Failure> {
    let mode = if live { Mode::Live } else { Mode::Offline };
    Pipeline::from_config(config, rules, mode).map_err(|e| invalid_rules(e, 2))
}

/// An opened input: the reader, its name in diagnostics, its size if known.
type Input = (Box<dyn BufRead>, String, Option<u64>);

/// Opens FILE (`-`: stdin) for reading lines.
fn open_input(file: &Path) -> Result<Input, Failure> {
    if file == Path::new("-") {
        return Ok((Box::new(io::stdin().lock()), "stdin".to_string(), None));
    }
    let f = std::fs::File::open(file)
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let size = f.metadata().ok().map(|m| m.len());
    Ok((
        Box::new(BufReader::with_capacity(1 << 16, f)),
        file.display().to_string(),
        size,
    ))
}

/// Opens `--journal URL` (`sqlite://PATH`, PATH or `postgres://...`) to
/// read, never creating an SQLite file: (where it is, for messages; it).
fn open_journal(
    url: &str,
) -> Result<(String, Box<dyn remedy::service::journal::Journal>), Failure> {
    let url = match url.parse::<remedy::config::JournalUrl>() {
        Ok(url) => url,
        Err(_) if !url.contains("://") => remedy::config::JournalUrl::Sqlite(PathBuf::from(url)),
        Err(e) => return Err(usage(format!("--journal {e}"))),
    };
    if let remedy::config::JournalUrl::Sqlite(path) = &url {
        if !path.is_file() {
            return Err(usage(format!(
                "--journal: no journal at {}",
                path.display()
            )));
        }
    }
    let journal = remedy::service::journal::reader(&url)
        .map_err(|e| usage(format!("--journal {url}: {e}")))?;
    Ok((url.to_string(), journal))
}

/// `remedy report`.
fn report(
    file: Option<&Path>,
    journal: Option<&str>,
    config: Option<&Path>,
    by: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let mut config = load_config(config)?;
    if by.is_some() {
        config.efficacy.by = by;
    }
    let rows = match (journal, file) {
        (Some(url), _) => {
            let (path, journal) = open_journal(url)?;
            remedy::efficacy::of_journal(
                &*journal,
                &config.policies(),
                config.efficacy.by.as_deref(),
            )
            .map_err(|e| usage(format!("--journal {path}: {e}")))?
            .rows()
        }
        (None, Some(file)) => {
            // The engine keeps the ledger as it decides.
            let mut pipeline = pipeline(&config, None, false)?;
            let (input, source, _) = open_input(file)?;
            replay::signal_steps(&mut pipeline, input, None, |_, _, _, _, _| {})
                .map_err(|e| usage(format!("reading {source}: {e}")))?;
            let rows = pipeline.engine.efficacy().rows();
            rows
        }
        (None, None) => return Err(usage("give FILE or --journal URL")),
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &rows)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        out.write_all(remedy::efficacy::render(&rows).as_bytes())
    };
    written.map_err(|e| usage(format!("writing: {e}")))
}

/// `remedy explain NODE`.
fn explain(
    node: &str,
    file: Option<&Path>,
    journal: Option<&str>,
    config: Option<&Path>,
    at: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let config = load_config(config)?;
    let at = match at {
        Some(t) => Some(
            remedy_engine::Timestamp::parse_rfc3339(&t)
                .map_err(|e| usage(format!("--at {t:?}: {e}")))?,
        ),
        None => None,
    };
    let (story, source) = match (journal, file) {
        (Some(url), _) => {
            // As the service built it, at the times it took the input in.
            let mut pipeline = pipeline(&config, None, true)?;
            let (path, journal) = open_journal(url)?;
            let story = remedy::explain::from_journal(&mut pipeline, &*journal, node, at);
            (story, path)
        }
        (None, Some(file)) => {
            let mut pipeline = pipeline(&config, None, false)?;
            let (input, source, _) = open_input(file)?;
            (
                remedy::explain::from_signals(&mut pipeline, input, node, at),
                source,
            )
        }
        (None, None) => return Err(usage("give FILE or --journal URL")),
    };
    let story = story.map_err(|e| usage(format!("reading {source}: {e}")))?;
    if story.is_empty() {
        eprintln!("error: {node}: no signal or decision about it in {source}");
        return Err(Failure {
            code: 1,
            message: String::new(),
        });
    }
    let stdout = io::stdout();
    let colour = !json && stdout.is_terminal();
    remedy::explain::write(&story, json, colour, &mut stdout.lock())
        .map_err(|e| usage(format!("writing: {e}")))
}

/// `remedy replay --journal URL`.
fn replay_journal(
    url: &str,
    config: Option<&Path>,
    rules: Option<PathBuf>,
    quiet: bool,
) -> Result<(), Failure> {
    let config = load_config(config)?;
    // As the service builds it: its clock, its dry-run setting.
    let mut pipeline = pipeline(&config, rules.as_deref(), true)?;
    let (path, journal) = open_journal(url)?;
    let display = Display {
        source: path,
        progress: !quiet && io::stderr().is_terminal(),
        total_bytes: None,
    };
    replay_out(&display, quiet, |display, out, diag| {
        replay::replay_journal(&mut pipeline, &*journal, display, out, diag)
    })
}

/// Runs a replay with decisions buffered to stdout, diagnostics to stderr,
/// and (unless `quiet`) the closing summary.
fn replay_out(
    display: &Display,
    quiet: bool,
    run: impl FnOnce(&Display, &mut dyn Write, &mut dyn Write) -> io::Result<replay::Summary>,
) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let stderr = io::stderr();
    let mut diag = stderr.lock();
    let summary = run(display, &mut out, &mut diag)
        .map_err(|e| usage(format!("reading {}: {e}", display.source)))?;
    if !quiet {
        let _ = diag.write_all(summary.render().as_bytes());
    }
    Ok(())
}

fn replay(
    file: &Path,
    config: Option<&Path>,
    rules: Option<PathBuf>,
    quiet: bool,
) -> Result<(), Failure> {
    let config = load_config(config)?;
    let mut pipeline = pipeline(&config, rules.as_deref(), false)?;
    let (input, source, total_bytes) = open_input(file)?;
    let display = Display {
        source,
        progress: !quiet && io::stderr().is_terminal(),
        total_bytes,
    };
    replay_out(&display, quiet, |display, out, diag| {
        replay::replay(&mut pipeline, input, display, out, diag)
    })
}

/// One side of a diff: a config file (its rules, policies, guards) or a
/// rules directory (with `--config`'s policies and guards, or the defaults).
fn side(path: &Path, shared: Option<&Path>) -> Result<(Pipeline, String), Failure> {
    if path.is_file() {
        let config = load_config(Some(path))?;
        let domain = config.guards.domain.clone();
        return Ok((pipeline(&config, None, false)?, domain));
    }
    if !path.is_dir() {
        return Err(usage(format!(
            "{}: neither a rules directory nor a config file",
            path.display()
        )));
    }
    let config = load_config(shared)?;
    let domain = config.guards.domain.clone();
    Ok((pipeline(&config, Some(path), false)?, domain))
}

fn diff(
    old: &Path,
    new: &Path,
    file: &Path,
    config: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let (mut old_side, domain) = side(old, config)?;
    let (mut new_side, _) = side(new, config)?;
    let (input, source, _) = open_input(file)?;
    let stderr = io::stderr();
    let mut diag = stderr.lock();
    let report = remedy::diff::diff(
        &mut old_side,
        &mut new_side,
        input,
        &source,
        &domain,
        &mut diag,
    )
    .map_err(|e| usage(format!("reading {source}: {e}")))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = if json {
        report
            .differences
            .iter()
            .try_for_each(|d| {
                serde_json::to_writer(&mut out, d)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
            })
            .and_then(|()| {
                // A class whose desired state changes: {"kind":"rollout",...}.
                report.previews.iter().try_for_each(|p| {
                    let mut v = serde_json::to_value(p).map_err(io::Error::from)?;
                    v["kind"] = "rollout".into();
                    serde_json::to_writer(&mut out, &v).map_err(io::Error::from)?;
                    out.write_all(b"\n")
                })
            })
            .and_then(|()| {
                let (by_fault, by_domain) = report.counts();
                writeln!(
                    diag,
                    "{} differences over {} signals; by fault: {by_fault:?}; by {domain}: {by_domain:?}",
                    report.differences.len(),
                    report.signals
                )
            })
    } else {
        out.write_all(report.render(&domain).as_bytes())
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(usage(format!("writing the report: {e}")))
        }
        _ => {}
    }
    if report.differences.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: String::new(),
        })
    }
}

fn run(config: Option<&Path>) -> Result<(), Failure> {
    let config = load_config(config)?
        .with_env()
        .map_err(|e| usage(e.to_string()))?;
    let settings =
        remedy::service::Settings::from_config(&config).map_err(|e| usage(e.to_string()))?;
    let build: remedy::service::Build =
        Box::new(move || Pipeline::from_config(&config, None, Mode::Live));
    // Whatever stops the start (rules, journal, address) is a usage error.
    remedy::service::run(settings, build).map_err(|e| match e {
        remedy::service::ServiceError::Rules(e) => invalid_rules(e, 2),
        e => usage(e.to_string()),
    })
}

fn simulate(scenario: Scenario, spec: &Spec) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match remedy::simulate::write(scenario, spec, &mut out) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(usage(format!("writing: {e}"))),
        _ => Ok(()),
    }
}

fn simulate_rollout(config: Option<&Path>, spec: &remedy::rollout::Spec) -> Result<(), Failure> {
    let Some(path) = config else {
        return Err(usage(
            "simulate rollout needs --config FILE with a [[node_class]] (see the README's rollout example)",
        ));
    };
    let config = load_config(Some(path))?;
    if config.node_classes.is_empty() {
        return Err(usage(format!(
            "{}: no [[node_class]]: nothing to roll out",
            path.display()
        )));
    }
    let mut pipeline = pipeline(&config, None, false)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = io::stderr();
    match remedy::rollout::run(&mut pipeline, spec, &mut out, &mut err) {
        Ok(summary) => {
            let _ = out.flush();
            eprint!("{}", summary.render());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(usage(format!("simulate rollout: {e}"))),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `remedy` alone: show what it can do, as a usage error.
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap renders a paragraph ("...were not provided:\n  <FILE>")
            // then usage and tips; keep the first paragraph, on one line.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = if first.is_empty() {
                "error: invalid arguments".to_string()
            } else {
                first.join(" ")
            };
            eprintln!("{first} (see 'remedy --help')");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run { config, log_format } => {
            remedy::service::init_logs(log_format);
            run(config.as_deref())
        }
        Command::Check { rules_dir, config } => check(rules_dir.as_deref(), config.as_deref()),
        Command::Test { rules_dir } => test(&rules_dir),
        Command::Replay {
            input:
                InputArgs {
                    journal: Some(journal),
                    ..
                },
            config,
            rules,
            quiet,
        } => replay_journal(&journal, config.as_deref(), rules, quiet),
        Command::Replay {
            input: InputArgs { file, .. },
            config,
            rules,
            quiet,
        } => replay(
            &file.expect("clap requires FILE without --journal"),
            config.as_deref(),
            rules,
            quiet,
        ),
        Command::Diff {
            old,
            new,
            file,
            config,
            json,
        } => diff(&old, &new, &file, config.as_deref(), json),
        Command::Report {
            input: InputArgs { file, journal },
            config,
            by,
            json,
        } => report(
            file.as_deref(),
            journal.as_deref(),
            config.as_deref(),
            by,
            json,
        ),
        Command::Explain {
            node,
            input: InputArgs { file, journal },
            config,
            at,
            json,
        } => explain(
            &node,
            file.as_deref(),
            journal.as_deref(),
            config.as_deref(),
            at,
            json,
        ),
        Command::Simulate {
            scenario: Scenario::Rollout,
            nodes,
            seed,
            minutes,
            config,
            fail,
            storm,
            ..
        } => simulate_rollout(
            config.as_deref(),
            &remedy::rollout::Spec {
                nodes,
                seed,
                minutes,
                fail,
                storm,
                from: "1.30.4".into(),
            },
        ),
        Command::Simulate {
            scenario,
            nodes,
            seed,
            minutes,
            rate,
            ..
        } => simulate(
            scenario,
            &Spec {
                nodes,
                seed,
                minutes,
                per_second: rate,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            if !message.is_empty() {
                // Problems with rules are already `path:line:col: message` lines; the rest get a prefix.
                if code == 1 || message.contains(".rhai:") {
                    println!("{message}");
                } else {
                    eprintln!("error: {message}");
                }
            }
            ExitCode::from(code)
        }
    }
}
