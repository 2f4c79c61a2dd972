#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what is
# missing (idempotent, skips what is there), then runs every test of the
# workspace. Usage: tests/run.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

# Rust toolchain: the machine's rustup toolchain; install rustup's default only where cargo is absent.
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: installing the Rust toolchain with rustup"
    command -v rustup >/dev/null 2>&1 || { echo "error: neither cargo nor rustup is installed" >&2; exit 2; }
    rustup default stable
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "installing $component"
        rustup component add "$component"
    fi
done

# A real Prometheus, Alertmanager and node exporter for the service tests, and
# PostgreSQL (Debian's packages; skipped when present).
missing=""
[ -x /usr/bin/prometheus-alertmanager ] || missing="$missing prometheus-alertmanager"
[ -x /usr/bin/prometheus-node-exporter ] || missing="$missing prometheus-node-exporter"
[ -x /usr/bin/prometheus ] || missing="$missing prometheus"
# PostgreSQL 15 for the shared-journal tests (each starts a private cluster).
[ -x /usr/lib/postgresql/15/bin/initdb ] || command -v pg_ctl >/dev/null 2>&1 || missing="$missing postgresql"
if [ -n "$missing" ]; then
    say "installing Debian packages for the service tests:$missing"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # shellcheck disable=SC2086
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing \
        || { echo "error: could not install:$missing" >&2; exit 2; }
fi

# A real Kafka-compatible broker for the Kafka tests: tansu 0.6, built once into a
# cache outside the clone (about 9 minutes on 2 cores; skipped when present).
tools="${REMEDY_TOOLS:-$HOME/.cache/remedy/tools}"
if [ -z "${TANSU:-}" ]; then
    if command -v tansu >/dev/null 2>&1; then
        TANSU="$(command -v tansu)"
    else
        TANSU="$tools/bin/tansu"
    fi
fi
if [ ! -x "$TANSU" ]; then
    say "tansu not found: building it (cargo install tansu --features dynostore, about 9 minutes, cached in $tools)"
    CARGO_TARGET_DIR="$tools/build" cargo install tansu --version '^0.6' --features dynostore --locked --root "$tools" \
        || { echo "error: could not build tansu" >&2; exit 2; }
    TANSU="$tools/bin/tansu"
fi
export TANSU

# Test runner: nextest when present (per-test timeouts from .config/nextest.toml), else cargo test.
if ! cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest not found: installing it (cargo install cargo-nextest --locked)"
    cargo install cargo-nextest --locked || say "could not install cargo-nextest; falling back to cargo test"
fi

if cargo nextest --version >/dev/null 2>&1; then
    say "running the workspace tests with nextest"
    cargo nextest run --workspace --all-targets --profile ci --no-fail-fast "$@"
else
    say "running the workspace tests with cargo test"
    cargo test --workspace --all-targets --no-fail-fast "$@"
fi
