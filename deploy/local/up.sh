#!/usr/bin/env bash
# The whole loop on this machine, with one command:
#
#   node exporter -> Prometheus (alert rules) -> Alertmanager -> remedy run <- Kafka (tansu)
#                                                                  |-> decisions: /v1/decisions, Kafka topic
#
# Installs what is missing (Debian's prometheus, prometheus-alertmanager,
# prometheus-node-exporter; tansu with cargo), builds remedy, generates the
# configs and alert rules, starts each process on a loopback port, waits
# until it answers, and prints where to look. Everything binds 127.0.0.1
# only, and every action is dry-run.
#
# Idempotent: a component already running (started by an earlier up.sh) is
# left alone and reported. deploy/local/down.sh stops exactly the processes
# this script started. State, logs and configs: REMEDY_LOCAL_STATE (default
# deploy/local/.state).
#
# Settings (environment; a running stack keeps the settings it started with):
#   REMEDY_LOCAL_REMEDY_PORT         9477   remedy's HTTP API
#   REMEDY_LOCAL_PROMETHEUS_PORT     9090
#   REMEDY_LOCAL_ALERTMANAGER_PORT   9093
#   REMEDY_LOCAL_NODE_EXPORTER_PORT  9100
#   REMEDY_LOCAL_KAFKA_PORT          9092
#   REMEDY_LOCAL_KAFKA               1      0: no broker, remedy runs without [kafka]
#   REMEDY_LOCAL_INSTANCES           1      2: two remedy instances (the second on
#                                           REMEDY_LOCAL_REMEDY_PORT + 1) on one PostgreSQL
#                                           journal with [ha]: one leads, one stands by
#   REMEDY_LOCAL_POSTGRES_PORT       5433   the private PostgreSQL of two instances
#   REMEDY_LOCAL_NODE                $(hostname)  the node name on this machine's alerts
#   REMEDY_LOCAL_INTERVAL            5s     scrape, rule evaluation and Alertmanager grouping
#   REMEDY_LOCAL_ALERT_FOR           1m     how long an alert condition must hold before it fires
#   REMEDY_LOCAL_DISK_FREE_PCT       5      NodeFilesystemAlmostOutOfSpace fires below this % free
#                                           (101: at once, to watch the loop turn)
#   REMEDY_LOCAL_RULES               rules/ of this repository (edits are hot-reloaded)
#   REMEDY_BIN                       a remedy binary to use instead of `cargo build --release`
#   TANSU                            a tansu binary (else PATH, else ~/.cache/remedy/tools/bin/tansu)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

mkdir -p "$state/pids" "$state/logs" "$state/textfile"

# --- settings: a running stack keeps its own --------------------------------
running_any=""
for c in "${components[@]}"; do
    [ -n "$(running_pid "$c")" ] && running_any="$running_any $c"
done
if [ -n "$running_any" ] && [ -f "$state/settings.env" ]; then
    say "already running:$running_any; keeping the settings they started with ($state/settings.env)"
    # shellcheck disable=SC1091
    . "$state/settings.env"
else
    remedy_port="${REMEDY_LOCAL_REMEDY_PORT:-9477}"
    prometheus_port="${REMEDY_LOCAL_PROMETHEUS_PORT:-9090}"
    alertmanager_port="${REMEDY_LOCAL_ALERTMANAGER_PORT:-9093}"
    node_exporter_port="${REMEDY_LOCAL_NODE_EXPORTER_PORT:-9100}"
    kafka_port="${REMEDY_LOCAL_KAFKA_PORT:-9092}"
    kafka="${REMEDY_LOCAL_KAFKA:-1}"
    instances="${REMEDY_LOCAL_INSTANCES:-1}"
    postgres_port="${REMEDY_LOCAL_POSTGRES_PORT:-5433}"
    node="${REMEDY_LOCAL_NODE:-$(hostname)}"
    interval="${REMEDY_LOCAL_INTERVAL:-5s}"
    alert_for="${REMEDY_LOCAL_ALERT_FOR:-1m}"
    disk_free_pct="${REMEDY_LOCAL_DISK_FREE_PCT:-5}"
    rules="${REMEDY_LOCAL_RULES:-$repo_dir/rules}"
    {
        for v in remedy_port prometheus_port alertmanager_port node_exporter_port kafka_port \
            kafka instances postgres_port node interval alert_for disk_free_pct rules; do
            printf '%s=%q\n' "$v" "${!v}"
        done
    } > "$state/settings.env"
fi
case "$instances" in 1 | 2) ;; *) die "REMEDY_LOCAL_INSTANCES: $instances is not 1 or 2" ;; esac
remedy_port_2=$((remedy_port + 1))
for p in remedy_port prometheus_port alertmanager_port node_exporter_port kafka_port postgres_port; do
    if ! [[ "${!p}" =~ ^[0-9]+$ ]] || [ "${!p}" -eq 0 ] || [ "${!p}" -gt 65535 ]; then
        die "${p}: ${!p} is not a port number"
    fi
done
[[ "$disk_free_pct" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "REMEDY_LOCAL_DISK_FREE_PCT: $disk_free_pct is not a number"
[[ "$interval" =~ ^[0-9]+(ms|s|m)$ ]] || die "REMEDY_LOCAL_INTERVAL: $interval is not a duration like 5s"
[[ "$alert_for" =~ ^[0-9]+(ms|s|m|h)$ ]] || die "REMEDY_LOCAL_ALERT_FOR: $alert_for is not a duration like 1m"
[ -d "$rules" ] || die "REMEDY_LOCAL_RULES: $rules is not a directory"

# --- what is missing gets installed ------------------------------------------
find_bin() {
    local b
    for b in "$@"; do
        if [ -x "/usr/bin/$b" ]; then printf '/usr/bin/%s' "$b"; return 0; fi
        if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    done
}

install_debs() {
    local missing=() pkg
    [ -n "$(find_bin prometheus)" ] || missing+=(prometheus)
    [ -n "$(find_bin prometheus-alertmanager alertmanager)" ] || missing+=(prometheus-alertmanager)
    [ -n "$(find_bin prometheus-node-exporter node_exporter)" ] || missing+=(prometheus-node-exporter)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "missing: ${missing[*]}; install them with your package manager (or put them on PATH) and run up.sh again"
    local sudo="" policy=/usr/sbin/policy-rc.d added=0 rc=0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    # The packages' own services would start at once and listen on every
    # interface: keep them from starting while installing, and disable them
    # afterwards. The stack runs its own processes on loopback.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 0755 "$policy" && added=1
    fi
    { $sudo apt-get update -qq \
        && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        || rc=$?
    [ "$added" = 1 ] && $sudo rm -f "$policy"
    [ "$rc" = 0 ] || die "could not install: ${missing[*]}"
    if [ -d /run/systemd/system ]; then
        for pkg in "${missing[@]}"; do
            [ "$pkg" = curl ] && continue
            $sudo systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
        done
    fi
}

tansu_bin() {
    if [ -n "${TANSU:-}" ]; then
        [ -x "$TANSU" ] || die "TANSU=$TANSU is not an executable"
        printf '%s' "$TANSU"
    elif command -v tansu >/dev/null 2>&1; then
        command -v tansu
    elif [ -x "$HOME/.cache/remedy/tools/bin/tansu" ]; then
        printf '%s' "$HOME/.cache/remedy/tools/bin/tansu"
    fi
}

install_debs
prometheus_bin="$(find_bin prometheus)"
alertmanager_bin="$(find_bin prometheus-alertmanager alertmanager)"
node_exporter_bin="$(find_bin prometheus-node-exporter node_exporter)"

if [ "$kafka" = 0 ]; then
    say "Kafka skipped (REMEDY_LOCAL_KAFKA=0): no broker, and remedy runs without [kafka]"
else
    tansu="$(tansu_bin)"
    if [ -z "$tansu" ]; then
        say "installing tansu, a Kafka-compatible broker (cargo install; about 10 minutes, once)"
        cargo install tansu --version '^0.6' --features dynostore --locked --root "$HOME/.cache/remedy/tools" \
            || die "could not install tansu; REMEDY_LOCAL_KAFKA=0 runs the stack without Kafka"
        tansu="$HOME/.cache/remedy/tools/bin/tansu"
    fi
fi

if [ -n "${REMEDY_BIN:-}" ]; then
    [ -x "$REMEDY_BIN" ] || die "REMEDY_BIN=$REMEDY_BIN is not an executable"
    remedy_bin="$REMEDY_BIN"
else
    target="${CARGO_TARGET_DIR:-$repo_dir/target}"
    case "$target" in /*) ;; *) target="$repo_dir/$target" ;; esac
    say "building remedy (cargo build --release; quick when nothing changed)"
    (cd "$repo_dir" && cargo build --release --locked --quiet --bin remedy)
    remedy_bin="$target/release/remedy"
    [ -x "$remedy_bin" ] || die "cargo build did not leave $remedy_bin"
fi

# --- configs -----------------------------------------------------------------
# Written every time from the settings above, so they always match them.

cat > "$state/prometheus.yml" <<EOF
# Generated by deploy/local/up.sh.
global:
  scrape_interval: $interval
  evaluation_interval: $interval
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$alertmanager_port"]
rule_files: ["$state/alerts.yml"]
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:$node_exporter_port"]
        # Alerts name the node remedy acts on by this label.
        labels: {node: "$node", cluster: local}
  - job_name: remedy
    static_configs:
      - targets: ["127.0.0.1:$remedy_port"]
EOF

# A subset of the node exporter mixin's alerts: those the shipped rules map
# to faults (contract 3.2). Same expressions; 'for' from REMEDY_LOCAL_ALERT_FOR.
cat > "$state/alerts.yml" <<EOF
# Generated by deploy/local/up.sh.
groups:
  - name: node-exporter
    rules:
      - alert: NodeFilesystemAlmostOutOfSpace
        expr: |
          (
            node_filesystem_avail_bytes{job="node",fstype!="",mountpoint!=""} / node_filesystem_size_bytes{job="node",fstype!="",mountpoint!=""} * 100 < $disk_free_pct
          and
            node_filesystem_readonly{job="node",fstype!="",mountpoint!=""} == 0
          )
        for: $alert_for
        labels: {severity: warning, fault_class: resource}
        annotations:
          summary: "Filesystem {{ \$labels.mountpoint }} on {{ \$labels.node }} has {{ printf \"%.2f\" \$value }}% space left."
      - alert: NodeFilesystemSpaceFillingUp
        expr: |
          (
            node_filesystem_avail_bytes{job="node",fstype!="",mountpoint!=""} / node_filesystem_size_bytes{job="node",fstype!="",mountpoint!=""} * 100 < 15
          and
            predict_linear(node_filesystem_avail_bytes{job="node",fstype!="",mountpoint!=""}[6h], 24*60*60) < 0
          and
            node_filesystem_readonly{job="node",fstype!="",mountpoint!=""} == 0
          )
        for: $alert_for
        labels: {severity: warning, fault_class: resource}
        annotations:
          summary: "Filesystem {{ \$labels.mountpoint }} on {{ \$labels.node }} is predicted to run out of space within 24 hours."
      - alert: NodeMemoryHighUtilization
        expr: 100 - (node_memory_MemAvailable_bytes{job="node"} / node_memory_MemTotal_bytes{job="node"} * 100) > 90
        for: $alert_for
        labels: {severity: warning, fault_class: resource}
        annotations:
          summary: "Memory on {{ \$labels.node }} is {{ printf \"%.0f\" \$value }}% used."
      - alert: NodeSystemSaturation
        expr: node_load1{job="node"} / count without (cpu, mode) (node_cpu_seconds_total{job="node", mode="idle"}) > 2
        for: $alert_for
        labels: {severity: warning, fault_class: resource}
        annotations:
          summary: "Load per core on {{ \$labels.node }} is {{ printf \"%.2f\" \$value }}."
      - alert: NodeSystemdServiceFailed
        expr: node_systemd_unit_state{job="node", state="failed"} == 1
        for: $alert_for
        labels: {severity: warning, fault_class: component}
        annotations:
          summary: "Systemd service {{ \$labels.name }} has entered failed state on {{ \$labels.node }}."
EOF

cat > "$state/alertmanager.yml" <<EOF
# Generated by deploy/local/up.sh.
route:
  receiver: remedy
  group_by: [alertname, node]
  group_wait: $interval
  group_interval: $interval
  repeat_interval: 1h
receivers:
  - name: remedy
    webhook_configs:
      - url: http://127.0.0.1:$remedy_port/v1/alertmanager
        send_resolved: true
EOF

{
    cat <<EOF
# Generated by deploy/local/up.sh. Every action is dry-run.
rules = "$rules"
dry_run = true

[http]
listen = "127.0.0.1:$remedy_port"

EOF
    if [ "$instances" = 2 ]; then
        cat <<EOF
[journal]
# Shared by both instances; the leader holds the lease.
url = "postgres://remedy@127.0.0.1:$postgres_port/remedy"

[ha]
lease = "10s"
EOF
    else
        cat <<EOF
[journal]
url = "sqlite://$state/remedy.db"
EOF
    fi
    cat <<EOF

# Node pressure read back from Prometheus: PSI memory stall (% of time, as
# the memory_pressure rule expects) and load per core.
[[prometheus]]
url = "http://127.0.0.1:$prometheus_port"
query = 'rate(node_pressure_memory_waiting_seconds_total{job="node"}[1m]) * 100'
type = "memory.pressure"
every = "$interval"

[[prometheus]]
url = "http://127.0.0.1:$prometheus_port"
query = 'node_load15{job="node"} / count without (cpu, mode) (node_cpu_seconds_total{job="node", mode="idle"})'
type = "load.high"
every = "$interval"

# On this demo machine a full disk is answered with a (dry-run) cordon, so
# the whole path from alert to action shows.
[faults.disk_pressure]
actions = ["cordon", "notify"]
on_resolve = ["uncordon"]
EOF
    if [ "$kafka" != 0 ]; then
        cat <<EOF

[kafka]
brokers = "127.0.0.1:$kafka_port"
group = "remedy-local"
signals = ["node-signals"]
dead_letter = "node-signals.dlq"
decisions = "remedy-decisions"
EOF
    fi
} > "$state/remedy.toml"

promtool="$(find_bin promtool)"
if [ -n "$promtool" ]; then
    "$promtool" check config "$state/prometheus.yml" > "$state/logs/promtool.log" 2>&1 \
        || die "generated Prometheus config is invalid: $(cat "$state/logs/promtool.log")"
fi
amtool="$(find_bin amtool)"
if [ -n "$amtool" ]; then
    "$amtool" check-config "$state/alertmanager.yml" > "$state/logs/amtool.log" 2>&1 \
        || die "generated Alertmanager config is invalid: $(cat "$state/logs/amtool.log")"
fi
"$remedy_bin" check "$rules" > "$state/logs/remedy-check.log" 2>&1 \
    || die "the rules in $rules do not compile: $(cat "$state/logs/remedy-check.log")"

# --- start what is not running -----------------------------------------------
started_now=()
# On a failure, stop what this run started (not what was already running).
cleanup_on_failure() {
    local rc=$? i
    [ "$rc" = 0 ] && return 0
    for ((i = ${#started_now[@]} - 1; i >= 0; i--)); do
        stop_component "${started_now[$i]}"
    done
    say "up.sh failed; logs are in $state/logs"
    exit "$rc"
}
trap cleanup_on_failure EXIT

# launch NAME PORT ENVVAR COMMAND...: starts COMMAND in its own session
# (closing the terminal does not stop it), output to logs/NAME.log.
launch() {
    local name="$1" port="$2" var="$3" pid started
    shift 3
    if port_open "$port"; then
        die "port $port, which $name should listen on, is taken by another process: set $var to a free port"
    fi
    setsid "$@" < /dev/null > "$state/logs/$name.log" 2>&1 &
    pid=$!
    started="$(start_time "$pid")"
    [ -n "$started" ] || die "$name exited at once: $(tail -n 20 "$state/logs/$name.log")"
    printf '%s %s\n' "$pid" "$started" > "$state/pids/$name.pid"
    started_now+=("$name")
}

# wait_ready NAME CHECK...: polls CHECK until it succeeds; fails if the
# process exits or 60 s pass.
wait_ready() {
    local name="$1" i
    shift
    for ((i = 0; i < 600; i++)); do
        "$@" && return 0
        [ -n "$(running_pid "$name")" ] \
            || die "$name exited: $(tail -n 20 "$state/logs/$name.log")"
        sleep 0.1
    done
    die "$name did not become ready within 60s: $(tail -n 20 "$state/logs/$name.log")"
}

# create_topic NAME: creates it on the local broker; one that exists is fine.
create_topic() {
    local broker="tcp://127.0.0.1:$kafka_port"
    "$tansu" topic create --broker "$broker" --partitions 3 "$1" >> "$state/logs/kafka-topics.log" 2>&1 \
        || "$tansu" topic list --broker "$broker" 2>> "$state/logs/kafka-topics.log" | grep -F "\"name\":\"$1\"" > /dev/null
}

http_ok() {
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

start() {
    local name="$1" pid
    pid="$(running_pid "$name")"
    if [ -n "$pid" ]; then
        say "$name already running (pid $pid)"
        return 1
    fi
    say "starting $name"
}

if start node-exporter; then
    ne_flags=(--web.listen-address="127.0.0.1:$node_exporter_port" --collector.textfile.directory="$state/textfile")
    # Failed systemd units (NodeSystemdServiceFailed) where systemd runs.
    [ -d /run/systemd/system ] && ne_flags+=(--collector.systemd)
    launch node-exporter "$node_exporter_port" REMEDY_LOCAL_NODE_EXPORTER_PORT "$node_exporter_bin" "${ne_flags[@]}"
    wait_ready node-exporter http_ok "http://127.0.0.1:$node_exporter_port/metrics"
fi

if [ "$kafka" != 0 ] && start kafka; then
    launch kafka "$kafka_port" REMEDY_LOCAL_KAFKA_PORT "$tansu" broker \
        --listener-url "tcp://127.0.0.1:$kafka_port" \
        --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
        --storage-engine memory://tansu/
    wait_ready kafka port_open "$kafka_port"
    # The broker keeps topics in memory: a fresh one needs them again.
    for topic in node-signals node-signals.dlq remedy-decisions; do
        wait_ready kafka create_topic "$topic"
    done
fi

# Two instances: their journal, a private PostgreSQL cluster in the state
# directory (initdb refuses root: it then belongs to the postgres user).
pg_bin=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && pg_bin="$d"; done
if [ "$instances" = 2 ] && start postgres; then
    [ -n "$pg_bin" ] || die "REMEDY_LOCAL_INSTANCES=2 needs PostgreSQL: install Debian's postgresql"
    as_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
        mkdir -p "$state/postgres" && chown postgres: "$state/postgres"
    fi
    if [ ! -f "$state/postgres/data/PG_VERSION" ]; then
        "${as_pg[@]}" "$pg_bin/initdb" --auth=trust --username=remedy -D "$state/postgres/data" \
            > "$state/logs/initdb.log" 2>&1 || die "initdb failed: $(tail -n 20 "$state/logs/initdb.log")"
    fi
    launch postgres "$postgres_port" REMEDY_LOCAL_POSTGRES_PORT "${as_pg[@]}" "$pg_bin/postgres" \
        -D "$state/postgres/data" -c listen_addresses=127.0.0.1 -p "$postgres_port" -k "$state/postgres"
    wait_ready postgres port_open "$postgres_port"
    wait_ready postgres "$pg_bin/psql" -h 127.0.0.1 -p "$postgres_port" -U remedy -d postgres -qAtc "SELECT 1"
    "$pg_bin/psql" -h 127.0.0.1 -p "$postgres_port" -U remedy -d postgres -qAtc \
        "SELECT 1 FROM pg_database WHERE datname = 'remedy'" | grep -q 1 \
        || "$pg_bin/createdb" -h 127.0.0.1 -p "$postgres_port" -U remedy remedy
fi

if start remedy; then
    launch remedy "$remedy_port" REMEDY_LOCAL_REMEDY_PORT \
        env -u REMEDY_LISTEN -u REMEDY_TOKEN -u REMEDY_JOURNAL -u REMEDY_RULES \
        "$remedy_bin" run --config "$state/remedy.toml"
    wait_ready remedy http_ok "http://127.0.0.1:$remedy_port/readyz"
fi

if [ "$instances" = 2 ] && start remedy-2; then
    # The same config on the next port; a standby is alive, not ready.
    launch remedy-2 "$remedy_port_2" REMEDY_LOCAL_REMEDY_PORT \
        env -u REMEDY_TOKEN -u REMEDY_JOURNAL -u REMEDY_RULES REMEDY_LISTEN="127.0.0.1:$remedy_port_2" \
        "$remedy_bin" run --config "$state/remedy.toml"
    wait_ready remedy-2 http_ok "http://127.0.0.1:$remedy_port_2/healthz"
fi

if start alertmanager; then
    # --cluster.listen-address= : no gossip port (it would listen on every interface).
    launch alertmanager "$alertmanager_port" REMEDY_LOCAL_ALERTMANAGER_PORT "$alertmanager_bin" \
        --config.file="$state/alertmanager.yml" \
        --storage.path="$state/alertmanager" \
        --web.listen-address="127.0.0.1:$alertmanager_port" \
        --cluster.listen-address=
    wait_ready alertmanager http_ok "http://127.0.0.1:$alertmanager_port/-/ready"
fi

if start prometheus; then
    launch prometheus "$prometheus_port" REMEDY_LOCAL_PROMETHEUS_PORT "$prometheus_bin" \
        --config.file="$state/prometheus.yml" \
        --storage.tsdb.path="$state/prometheus" \
        --storage.tsdb.retention.time=2d \
        --web.listen-address="127.0.0.1:$prometheus_port"
    wait_ready prometheus http_ok "http://127.0.0.1:$prometheus_port/-/ready"
fi

trap - EXIT

# --- where to look -------------------------------------------------------------
api="http://127.0.0.1:$remedy_port"
cat <<EOF

remedy's local stack is up (state, configs and logs: $state)

  remedy          $api              node: $node, every action dry-run
EOF
if [ "$instances" = 2 ]; then
    cat <<EOF
  remedy (2nd)    http://127.0.0.1:$remedy_port_2              a standby: takes over once the leader's lease lapses
  PostgreSQL      127.0.0.1:$postgres_port            the shared journal (/readyz says each one's role)
EOF
fi
cat <<EOF
  Prometheus      http://127.0.0.1:$prometheus_port         alerts: /alerts
  Alertmanager    http://127.0.0.1:$alertmanager_port
  node exporter   http://127.0.0.1:$node_exporter_port/metrics
EOF
if [ "$kafka" != 0 ]; then
    cat <<EOF
  Kafka (tansu)   127.0.0.1:$kafka_port            topics: node-signals, node-signals.dlq, remedy-decisions
EOF
fi
cat <<EOF

Decisions and faults:
  curl -s '$api/v1/decisions?since=0'
  curl -s '$api/v1/faults?state=open'
  curl -s $api/metrics | grep ^remedy_
Send a signal over HTTP:
  curl -s -X POST --data-binary '{"node":"$node","kind":"hardware","type":"memory.ecc.uncorrectable"}' $api/v1/signals
EOF
if [ "$kafka" != 0 ]; then
    cat <<EOF
Produce a signal to Kafka, read the decisions topic:
  echo '{"key":"$node","value":{"node":"$node","kind":"hardware","type":"disk.smart.failing"}}' | $tansu cat produce --broker tcp://127.0.0.1:$kafka_port node-signals
  for p in 0 1 2; do $tansu cat consume --broker tcp://127.0.0.1:$kafka_port --partition \$p --max-wait-time-ms 500 remedy-decisions; done
EOF
fi
if awk "BEGIN { exit !($disk_free_pct <= 100) }"; then
    cat <<EOF
Watch the alert path turn at once (a disk alert on this machine, answered by a dry-run cordon):
  deploy/local/down.sh && REMEDY_LOCAL_DISK_FREE_PCT=101 REMEDY_LOCAL_ALERT_FOR=0s REMEDY_LOCAL_INTERVAL=1s deploy/local/up.sh
EOF
fi
echo "Stop everything: deploy/local/down.sh"
