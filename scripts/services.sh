#!/usr/bin/env bash
# PostgreSQL, Redis and HAProxy for the tests (docs/scaling.md#tests): when the local
# servers answer, nothing is done. Otherwise they are installed from Debian's packages if missing and
# started: PostgreSQL's cluster with `pg_ctlcluster`, Redis with `--daemonize yes` and no
# persistence. A PostgreSQL installed here lets local TCP connections in without a password
# (trust on 127.0.0.1 and ::1), as the tests' default CHATD_TEST_POSTGRES_URL expects: this
# is for a test machine, never a production server.
# CHATD_TEST_SKIP_POSTGRES=1 leaves PostgreSQL out (its tests are then skipped).
set -euo pipefail

run_as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run_as_root=(sudo)
  fi
fi
need_root() {
  if [ "$(id -u)" != 0 ] && [ ${#run_as_root[@]} = 0 ]; then
    echo "services: $1 needs root; run as root, or start it yourself" >&2
    exit 1
  fi
}
updated=
apt_install() {
  need_root "installing $*"
  if [ -z "$updated" ]; then "${run_as_root[@]}" apt-get update -q; updated=1; fi
  "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "$@"
}
wait_for() {  # wait_for NAME COMMAND...: up to 30 s
  for _ in $(seq 60); do "${@:2}" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $1 did not start" >&2
  exit 1
}

# ------------------------------------------------------------------------------ PostgreSQL
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
case "${CHATD_TEST_SKIP_POSTGRES:-}" in
  1|true|yes) ;;
  *)
    if ! pg_up; then
      if ! command -v pg_ctlcluster >/dev/null || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
        apt_install postgresql
      fi
      need_root "starting PostgreSQL"
      read -r version cluster _ < <(pg_lsclusters -h | head -1)
      hba="/etc/postgresql/$version/$cluster/pg_hba.conf"
      if ! grep -q '^# chatd tests' "$hba"; then
        "${run_as_root[@]}" sed -i "1i # chatd tests: local TCP without a password\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust" "$hba"
      fi
      "${run_as_root[@]}" pg_ctlcluster "$version" "$cluster" start || \
        "${run_as_root[@]}" pg_ctlcluster "$version" "$cluster" reload
      wait_for PostgreSQL pg_up
      echo "services: PostgreSQL $version started on 127.0.0.1:5432"
    fi ;;
esac

# ----------------------------------------------------------------------------------- Redis
redis_up() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --logfile "" >/dev/null
  wait_for Redis redis_up
  echo "services: Redis started on 127.0.0.1:6379"
fi

# ------------------------------------------------------------------------------- HAProxy
# The load balancer of `make cluster` and of the failover tests (deploy/haproxy/): only the
# program is wanted, not Debian's service, which is stopped and disabled again.
if ! command -v haproxy >/dev/null; then
  apt_install haproxy
  "${run_as_root[@]}" systemctl disable --now haproxy >/dev/null 2>&1 || true
  echo "services: HAProxy installed"
fi
