# shellcheck shell=bash
# shellcheck disable=SC2034  # (variables used by up.sh and down.sh)
# Shared by up.sh and down.sh (sourced, not run): where the local stack
# keeps its state, and how a process it started is told apart from any
# other process that may later get the same pid.
#
# State directory (REMEDY_LOCAL_STATE, default deploy/local/.state):
#   settings.env        the ports and knobs the running stack was started with
#   pids/NAME.pid       "PID STARTTIME" of each process up.sh started
#   logs/NAME.log       each process's output
#   *.yml, remedy.toml  the generated configs
#   prometheus/, alertmanager/, textfile/, remedy.db*, postgres/   their data

local_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$local_dir/../.." && pwd)"
state="${REMEDY_LOCAL_STATE:-$local_dir/.state}"

# The components, in the order they start; down.sh stops them in reverse.
components=(node-exporter kafka postgres remedy remedy-2 alertmanager prometheus)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The start time of a process in clock ticks since boot (field 22 of
# /proc/PID/stat), or nothing when there is no such process. A pid is
# reused only by a process that started later, so pid + start time names
# one process for good.
start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    # The command name (field 2) may contain spaces: count from after ')'.
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    # Field 3 (state) is the first after ')': field 22 is the 20th.
    [ "$1" = "Z" ] && return 0
    printf '%s' "${20}"
}

# The pid of component $1 if the process up.sh started for it still runs,
# else nothing (and a stale pid file is removed).
running_pid() {
    local file="$state/pids/$1.pid" pid started
    [ -f "$file" ] || return 0
    read -r pid started < "$file" || true
    if [ -n "${pid:-}" ] && [ -n "${started:-}" ] && [ "$(start_time "$pid")" = "$started" ]; then
        printf '%s' "$pid"
    else
        rm -f "$file"
    fi
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Stops component $1 if up.sh started it and it still runs: SIGTERM, then
# SIGKILL after 15 s. Never touches a process it did not start.
stop_component() {
    local name="$1" pid i
    pid="$(running_pid "$name")"
    if [ -z "$pid" ]; then
        rm -f "$state/pids/$name.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        [ -n "$(running_pid "$name")" ] || break
        sleep 0.1
    done
    if [ -n "$(running_pid "$name")" ]; then
        say "$name (pid $pid) did not stop on SIGTERM within 15s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [ -n "$(running_pid "$name")" ] || break
            sleep 0.1
        done
    fi
    rm -f "$state/pids/$name.pid"
    say "stopped $name (pid $pid)"
}
