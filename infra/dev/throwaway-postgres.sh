# Sourced by the test and bench scripts: starts a throwaway PostgreSQL cluster
# on a free port and exports KIHON4_TEST_DATABASE_URL; `stop_throwaway_postgres`
# removes it. Installs Debian's postgresql package when no server is found.
# PostgreSQL refuses to run as root, so as root the cluster runs as an
# unprivileged user.

find_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] && command -v pg_ctl >/dev/null 2>&1; then
    dir=$(dirname "$(command -v pg_ctl)")
  fi
  printf '%s' "$dir"
}

install_postgres() {
  echo "throwaway-postgres: no PostgreSQL server found; installing Debian's postgresql package" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "throwaway-postgres: cannot install PostgreSQL without root; install it or set KIHON4_TEST_DATABASE_URL" >&2
      return 1
    fi
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

start_throwaway_postgres() {
  local bin
  bin=$(find_pg_bin)
  if [ -z "$bin" ]; then
    install_postgres || return 1
    bin=$(find_pg_bin)
  fi
  [ -n "$bin" ] || { echo "throwaway-postgres: PostgreSQL binaries not found" >&2; return 1; }

  THROWAWAY_PG_DIR=$(mktemp -d /tmp/kihon4-pg.XXXXXX)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local run=()
  if [ "$(id -u)" -eq 0 ]; then
    local user=postgres
    if ! id "$user" >/dev/null 2>&1; then
      user=kihon4pg
      id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    fi
    chown "$user" "$THROWAWAY_PG_DIR"
    chmod 700 "$THROWAWAY_PG_DIR"
    run=(runuser -u "$user" --)
  fi
  THROWAWAY_PG_RUN=("${run[@]}")
  THROWAWAY_PG_BIN=$bin
  "${run[@]}" "$bin/initdb" -D "$THROWAWAY_PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$THROWAWAY_PG_DIR/initdb.log" 2>&1 \
    || { cat "$THROWAWAY_PG_DIR/initdb.log" >&2; return 1; }
  # A throwaway cluster: durability is not wanted, speed is; and little
  # write-ahead log is kept, so that a CI machine's disk is not filled by it.
  "${run[@]}" "$bin/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -l "$THROWAWAY_PG_DIR/server.log" -w -t 60 \
    -o "-p $port -k $THROWAWAY_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=256MB -c min_wal_size=64MB ${THROWAWAY_PG_OPTIONS:-}" \
    start >/dev/null || { cat "$THROWAWAY_PG_DIR/server.log" >&2; return 1; }
  export KIHON4_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "throwaway-postgres: running on port $port ($THROWAWAY_PG_DIR)" >&2
}

stop_throwaway_postgres() {
  if [ -n "${THROWAWAY_PG_DIR:-}" ] && [ -d "$THROWAWAY_PG_DIR/data" ]; then
    "${THROWAWAY_PG_RUN[@]}" "$THROWAWAY_PG_BIN/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$THROWAWAY_PG_DIR"
  fi
}
