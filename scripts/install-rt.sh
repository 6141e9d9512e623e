#!/usr/bin/env bash
# Request Tracker 5 from Debian's packages, for the handoff tests (docs/handoff.md#tests).
# Installs only what is missing; the tests themselves start RT on a fresh database on a
# loopback port and stop it by its PID (tests/handoff/conftest.py).
set -euo pipefail

if [ -x /usr/share/request-tracker5/libexec/rt-server ] && [ -x /usr/sbin/rt-setup-database-5 ]; then
  exit 0
fi
case "${CHATD_TEST_SKIP_RT:-}" in
  1|true|yes)
    echo "install-rt: Request Tracker is not installed; its tests are skipped (CHATD_TEST_SKIP_RT)"
    exit 0 ;;
esac

run_as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run_as_root=(sudo)
  else
    echo "install-rt: installing Request Tracker needs root (apt-get install request-tracker5" \
         "rt5-db-sqlite rt5-standalone); run as root, or set CHATD_TEST_SKIP_RT=1 to skip" \
         "the RT tests on purpose" >&2
    exit 1
  fi
fi
started=$(date +%s)
"${run_as_root[@]}" apt-get update -q
"${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  --no-install-recommends request-tracker5 rt5-db-sqlite rt5-standalone
echo "install-rt: Request Tracker installed in $(( $(date +%s) - started )) s"
