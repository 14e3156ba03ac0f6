# Shared by scripts/test and scripts/demo: a virtual environment and a reachable Redis.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_venv() {
    local python=${PYTHON:-python3}
    if ! command -v "$python" >/dev/null; then
        echo "python3 (3.11 or newer) is needed: install it with your package manager" >&2
        exit 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "Python 3.11 or newer is needed; $python is $("$python" -V 2>&1)" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the virtual environment in .venv"
        "$python" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        say "installing kayle-webhooks and its test tools into .venv"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
        # An earlier version installed the example plugin here: every worker of this venv would run it.
        "$VENV/bin/python" -m pip uninstall --quiet --yes kayle-example-plugin >/dev/null 2>&1 || true
        touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

# promtool, for the unit tests of the alert rules (deploy/prometheus): Debian's prometheus package
# brings it. Only the tool is used; the Prometheus service the package installs need not run.
ensure_promtool() {
    command -v promtool >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing promtool (Debian's prometheus package) with apt-get"
        apt-get update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
    if ! command -v promtool >/dev/null; then
        echo "promtool is needed to test the alert rules: install it (Debian/Ubuntu, as root:" \
             "'apt-get install --no-install-recommends prometheus') or put a promtool on PATH" >&2
        exit 1
    fi
}

# The Debian mirror this host's apt uses: the first URIs: line of the deb822 file $1 (default
# /etc/apt/sources.list.d/debian.sources), else the first `deb` line of the one-line file $2
# (default /etc/apt/sources.list). Prints nothing when neither names one.
debian_mirror() {
    local sources=${1:-/etc/apt/sources.list.d/debian.sources} list=${2:-/etc/apt/sources.list} uri=
    if [ -r "$sources" ]; then
        uri=$(awk 'tolower($1) == "uris:" && NF > 1 { print $2; exit }' "$sources")
    fi
    if [ -z "$uri" ] && [ -r "$list" ]; then
        # deb [option=value ...] URI suite component...
        uri=$(sed -n -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$list" | head -n 1)
    fi
    printf '%s' "$uri"
}

# True when a Redis server answers PING at host $1 port $2 (bash only: no client needed).
redis_answers() {
    local reply
    { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3 || true
    exec 3>&- 3<&-
    [[ "$reply" == "+PONG"* ]]
}

ensure_redis_server_binary() {
    command -v redis-server >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing redis-server with apt-get"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    if ! command -v redis-server >/dev/null; then
        echo "No Redis answers and no redis-server binary was found. Install one (Debian/Ubuntu:" \
             "'sudo apt-get install redis-server'; macOS: 'brew install redis') or set KAYLE_REDIS_URL" \
             "to a Redis you run." >&2
        exit 1
    fi
}

postgres_bin_dir() {
    local found
    found=$(command -v initdb 2>/dev/null) && { dirname "$(readlink -f "$found")"; return 0; }
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1) || true
    [ -n "$found" ] && [ -x "$found/initdb" ] && { echo "$found"; return 0; }
    return 1
}

# The tests of ctx.first_time() on PostgreSQL start a private server of their own (tests/postgres.py) from
# these binaries; Debian's postgresql package provides them. Without them (and no way to install them)
# those tests skip.
# wrk, the HTTP load generator of the benchmarks (bench/run), from Debian's package when missing.
ensure_wrk() {
    command -v wrk >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing wrk with apt-get"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
    command -v wrk >/dev/null || { echo "wrk is needed for the benchmarks: apt-get install wrk" >&2; exit 1; }
}

ensure_postgres_binaries() {
    postgres_bin_dir >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing PostgreSQL (Debian's postgresql package) with apt-get, for the tests"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || true
    fi
    if ! postgres_bin_dir >/dev/null; then
        say "no PostgreSQL binaries (initdb): the PostgreSQL tests will be skipped (Debian/Ubuntu: 'sudo apt-get install postgresql')"
    fi
}

# Sets KAYLE_REDIS_URL to a Redis that answers: the configured one, 127.0.0.1:6379, or a private
# redis-server (append-only, data in $1) started on a free port and stopped when the script exits.
ensure_redis() {
    local datadir=$1
    if [ -n "${KAYLE_REDIS_URL:-}" ]; then
        say "using Redis at $KAYLE_REDIS_URL"
        return 0
    fi
    if redis_answers 127.0.0.1 6379; then
        export KAYLE_REDIS_URL="redis://127.0.0.1:6379/0"
        say "using the Redis that answers on 127.0.0.1:6379"
        return 0
    fi
    ensure_redis_server_binary
    mkdir -p "$datadir"
    local port
    port=$("${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    say "starting a private redis-server on 127.0.0.1:$port (append-only, data in $datadir)"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$datadir" --appendonly yes --save "" \
        --daemonize yes --pidfile "$datadir/redis.pid" --logfile "$datadir/redis.log"
    PRIVATE_REDIS_PIDFILE="$datadir/redis.pid"
    for _ in $(seq 50); do redis_answers 127.0.0.1 "$port" && break; sleep 0.1; done
    export KAYLE_REDIS_URL="redis://127.0.0.1:$port/0"
}

stop_private_redis() {
    if [ -n "${PRIVATE_REDIS_PIDFILE:-}" ] && [ -f "$PRIVATE_REDIS_PIDFILE" ]; then
        kill "$(cat "$PRIVATE_REDIS_PIDFILE")" 2>/dev/null || true
    fi
}
