//! `remedy`: fault remediation for large fleets. See `remedy --help`.

use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use remedy::config::Config;
use remedy::pipeline::Pipeline;
use remedy::replay::{self, Display};
use remedy::ruletest;
use remedy_actions::{Guards, LogOnly};
use remedy_engine::{Engine, LoadError, Options, RuleSet};

/// Signals in, rules classify, guarded actions out.
#[derive(Parser)]
#[command(name = "remedy", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 rules invalid or tests failed, 2 usage, missing file or invalid config."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Compile every rule; print `path:line:col: message` for each problem.
    Check {
        /// Directory of *.rhai rules.
        #[arg(value_name = "RULES_DIR", default_value = "rules")]
        rules_dir: PathBuf,
    },
    /// Run the rule test cases (`X.test.yaml` beside `X.rhai`).
    Test {
        /// Directory of *.rhai rules and their tests.
        #[arg(value_name = "RULES_DIR", default_value = "rules")]
        rules_dir: PathBuf,
    },
    /// Feed recorded signals (JSON lines, `-` for stdin) through rules and
    /// lifecycle in event time; print decisions as JSON lines.
    Replay {
        /// Recorded signals, one JSON object per line; `-` reads stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Configuration file (TOML): rules directory and policies.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Rules directory, overriding the config's `rules`.
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
        /// No progress bar and no closing summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
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

fn check(dir: &Path) -> Result<(), Failure> {
    let options = Options::default();
    let rules = RuleSet::load(dir, &options.sandbox, Engine::world(&options))
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

fn replay(
    file: &Path,
    config: Option<&Path>,
    rules: Option<PathBuf>,
    quiet: bool,
) -> Result<(), Failure> {
    let config = match config {
        Some(path) => Config::load(path).map_err(|e| usage(e.to_string()))?,
        None => Config::default(),
    };
    for warning in config.not_yet_enforced() {
        eprintln!("warning: {warning}");
    }
    let rules_dir = rules.unwrap_or_else(|| config.rules.clone());
    let options = Options {
        flap: config.guards.flap,
        ..Options::default()
    };
    let engine =
        Engine::load(&rules_dir, config.policies(), &options).map_err(|e| invalid_rules(e, 2))?;
    let (guard_config, actions) = config.guards();
    let mut guards = Guards::new(guard_config, actions, Box::new(LogOnly));
    for silence in &config.silences {
        guards.silence(silence.clone());
    }
    let mut pipeline = Pipeline::new(engine, guards);

    let (input, source, total_bytes): (Box<dyn BufRead>, String, Option<u64>) =
        if file == Path::new("-") {
            (Box::new(io::stdin().lock()), "stdin".to_string(), None)
        } else {
            let f = std::fs::File::open(file)
                .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
            let size = f.metadata().ok().map(|m| m.len());
            (
                Box::new(BufReader::with_capacity(1 << 16, f)),
                file.display().to_string(),
                size,
            )
        };
    let display = Display {
        source,
        progress: !quiet && io::stderr().is_terminal(),
        total_bytes,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let stderr = io::stderr();
    let mut diag = stderr.lock();
    let summary = replay::replay(&mut pipeline, input, &display, &mut out, &mut diag)
        .map_err(|e| usage(format!("reading {}: {e}", display.source)))?;
    if !quiet {
        let _ = diag.write_all(summary.render().as_bytes());
    }
    Ok(())
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
        Command::Check { rules_dir } => check(&rules_dir),
        Command::Test { rules_dir } => test(&rules_dir),
        Command::Replay {
            file,
            config,
            rules,
            quiet,
        } => replay(&file, config.as_deref(), rules, quiet),
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
