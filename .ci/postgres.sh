# Start a throwaway PostgreSQL server for the tests and export COVAULT_TEST_POSTGRES_URL; the
# server stops and its folder is removed when the sourcing shell exits. Sourced by .ci/run.
# As root (CI) it installs Debian's postgresql package when its binaries are absent and runs the
# server as the postgres system user; otherwise it uses the binaries that exist, or says why not.

covault_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

covault_pg_start() {
    local bin dir port password as_user=()
    bin=$(covault_pg_bin)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
            bin=$(covault_pg_bin)
        fi
        if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
            echo "postgres.sh: no PostgreSQL binaries under /usr/lib/postgresql/*/bin; PostgreSQL tests skip" >&2
            return 0
        fi
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/covault-pg.XXXXXX")
    if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root
        chown postgres: "$dir"
        as_user=(runuser -u postgres --)
    fi
    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "$password" >"$dir/pwfile"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/pwfile"; fi
    COVAULT_PG_DIR=$dir
    COVAULT_PG_CTL=("${as_user[@]}" "$bin/pg_ctl")
    trap covault_pg_stop EXIT
    "${as_user[@]}" "$bin/initdb" -D "$dir/data" -U covault --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    rm -f "$dir/pwfile"
    "${COVAULT_PG_CTL[@]}" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    "${as_user[@]}" "$bin/createdb" -h "$dir" -p "$port" -U covault covault_test
    export COVAULT_TEST_POSTGRES_URL="postgresql+psycopg://covault:$password@127.0.0.1:$port/covault_test"
    echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

covault_pg_stop() {
    if [ -n "${COVAULT_PG_DIR:-}" ]; then
        "${COVAULT_PG_CTL[@]}" -D "$COVAULT_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$COVAULT_PG_DIR"
        COVAULT_PG_DIR=
    fi
}

covault_pg_start
