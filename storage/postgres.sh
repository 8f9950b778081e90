#!/usr/bin/env bash
# A PostgreSQL server for a study shared by several machines, with its data under storage/.
#
#   storage/postgres.sh start [--listen ADDRESS] [--port PORT]   # default 0.0.0.0:5433
#   storage/postgres.sh url                                       # the URL workers use
#   storage/postgres.sh status
#   storage/postgres.sh stop
#
# `start` creates the cluster on first use (storage/pgdata/data), a role `tunesvc` with a
# generated password (kept in storage/pgdata/password, mode 600) and a database `tunesvc`;
# every connection must give the password (scram-sha-256). It prints the URL; give it to the
# other machines as TUNESVC_STORAGE (through a secret store, not a shell history).
# Server binaries: PATH, else /usr/lib/postgresql/*/bin (apt-get install postgresql).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${TUNESVC_PG_DIR:-$HERE/pgdata}"
DATA="$ROOT/data"
RUN="$ROOT/run"
LOG="$ROOT/server.log"
PASSWORD_FILE="$ROOT/password"
SETTINGS="$ROOT/listen"
OS_USER="${TUNESVC_PG_OS_USER:-postgres}"  # initdb refuses to run as root

die() { echo "postgres.sh: $*" >&2; exit 1; }

bin() {
  local name=$1 found
  if found=$(command -v "$name" 2>/dev/null); then echo "$found"; return; fi
  found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n1)
  [[ -n "$found" ]] || die "no $name: install the PostgreSQL server (apt-get install postgresql)"
  echo "$found"
}

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u "$OS_USER" -- "$@"; else "$@"; fi
}

listen_of() { cut -d' ' -f1 "$SETTINGS"; }
port_of() { cut -d' ' -f2 "$SETTINGS"; }

url() {
  [[ -f "$PASSWORD_FILE" && -f "$SETTINGS" ]] || die "no server set up yet: run $0 start"
  local host
  host=$(listen_of)
  if [[ "$host" == "0.0.0.0" || "$host" == "*" ]]; then
    host=$(hostname -I 2>/dev/null | awk '{print $1}')
    [[ -n "$host" ]] || host=$(hostname -f)
  fi
  echo "postgresql://tunesvc:$(cat "$PASSWORD_FILE")@$host:$(port_of)/tunesvc"
}

start() {
  local listen="0.0.0.0" port="5433"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --listen) listen="$2"; shift 2 ;;
      --port) port="$2"; shift 2 ;;
      *) die "unknown option $1 (use --listen ADDRESS --port PORT)" ;;
    esac
  done
  [[ "$port" =~ ^[0-9]+$ ]] || die "--port: expected a number, got $port"
  mkdir -p "$ROOT" "$RUN"
  chmod 700 "$ROOT"
  if [[ $(id -u) -eq 0 ]]; then
    id "$OS_USER" >/dev/null 2>&1 || die "running as root needs an OS user $OS_USER to own the data"
    chown "$OS_USER" "$ROOT" "$RUN"
  fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    umask 077
    head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 > "$PASSWORD_FILE"
    local admin="$ROOT/admin-password"
    head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 > "$admin"
    [[ $(id -u) -eq 0 ]] && chown "$OS_USER" "$admin"
    as_owner "$(bin initdb)" -D "$DATA" -U postgres --pwfile="$admin" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$DATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >> "$DATA/pg_hba.conf"
    local fresh=1
  fi
  echo "$listen $port" > "$SETTINGS"
  if as_owner "$(bin pg_ctl)" -D "$DATA" status >/dev/null 2>&1; then
    die "already running; $0 stop first to change where it listens"
  fi
  as_owner "$(bin pg_ctl)" -D "$DATA" -l "$LOG" -w -t 60 start \
    -o "-c listen_addresses='$listen' -p $port -c unix_socket_directories='$RUN'" >/dev/null \
    || die "the server did not start; see $LOG"
  if [[ -n "${fresh:-}" ]]; then
    local pw
    pw=$(cat "$PASSWORD_FILE")
    PGPASSWORD=$(cat "$ROOT/admin-password") "$(bin psql)" -q -h "$RUN" -p "$port" \
      -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE tunesvc LOGIN PASSWORD '$pw'" \
      -c "CREATE DATABASE tunesvc OWNER tunesvc" >/dev/null
  fi
  echo "PostgreSQL for tunesvc listens on $listen:$port (data in $DATA). Workers use:" >&2
  url
}

stop() {
  [[ -f "$DATA/PG_VERSION" ]] || die "no server set up in $DATA"
  as_owner "$(bin pg_ctl)" -D "$DATA" -m fast -w stop >/dev/null && echo "stopped" >&2
}

status() {
  [[ -f "$DATA/PG_VERSION" ]] || { echo "not set up"; exit 3; }
  if as_owner "$(bin pg_ctl)" -D "$DATA" status >/dev/null 2>&1; then
    echo "running on $(listen_of):$(port_of)"
  else
    echo "stopped"; exit 3
  fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  url) url ;;
  status) status ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
