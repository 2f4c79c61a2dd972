#!/usr/bin/env bash
# Stops the local stack that deploy/local/up.sh started: only the processes
# it recorded, each checked by pid and start time (a pid since reused by
# another process is left alone), in the reverse order of their start. Then
# removes what up.sh generated (configs, data, logs, the journal), so the
# next up.sh starts afresh; --keep keeps them for a look.
#
#   deploy/local/down.sh [--keep]
#
# REMEDY_LOCAL_STATE names the state directory, as for up.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

keep=0
case "${1:-}" in
    "") ;;
    --keep) keep=1 ;;
    *) die "usage: down.sh [--keep]" ;;
esac

if [ ! -d "$state" ]; then
    say "nothing to stop: no state directory $state"
    exit 0
fi

for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    stop_component "${components[$i]}"
done
rmdir "$state/pids" 2>/dev/null || true

# A port still answering now belongs to some other process.
if [ -f "$state/settings.env" ]; then
    # shellcheck disable=SC1091
    . "$state/settings.env"
    # shellcheck disable=SC2154  # (set by settings.env)
    for p in "$remedy_port" "$prometheus_port" "$alertmanager_port" "$node_exporter_port" "$kafka_port" \
        ${postgres_port:-}; do
        port_open "$p" && say "note: 127.0.0.1:$p still answers, but not by a process up.sh started"
    done
fi

if [ "$keep" = 1 ]; then
    say "kept configs, data and logs in $state"
    exit 0
fi
# Only what up.sh creates: the state directory may be one the user named.
rm -rf "$state/prometheus" "$state/alertmanager" "$state/textfile" "$state/logs" "$state/postgres"
rm -f "$state/settings.env" "$state/prometheus.yml" "$state/alerts.yml" "$state/alertmanager.yml" \
    "$state/remedy.toml" "$state/remedy.db" "$state/remedy.db-wal" "$state/remedy.db-shm"
rmdir "$state" 2>/dev/null || true
say "the local stack is down"
