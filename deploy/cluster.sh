#!/usr/bin/env bash
# A keel cluster on one Linux machine, hosts as network namespaces.
#
#   deploy/cluster.sh up        build it (installs the engines if missing)
#   deploy/cluster.sh drill     the seven fault drills under load (or: drill 1 4)
#   deploy/cluster.sh status    processes per host, HAProxy's view
#   deploy/cluster.sh down      remove everything it made (idempotent)
#
# Needs root, `ip netns`, and the repo's virtualenv (make install). Details in
# deploy/cluster.py and docs/scaling.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "cluster.sh: must run as root (network namespaces, bridges)" >&2
  exit 2
fi
if ! ip netns list >/dev/null 2>&1; then
  echo "cluster.sh: 'ip netns' is not available here" >&2
  exit 2
fi

install_engines() {
  local missing=()
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "cluster.sh: installing ${missing[*]}"
  # The packages' own services must not start on the machine (they would
  # take ports the machine's PostgreSQL/Redis may use): deny service starts
  # for the duration of the install unless a policy already exists.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  trap '[ "$made_policy" = 1 ] && rm -f "$policy"' RETURN
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

case "${1:-}" in
  up)
    install_engines
    [ -x .venv/bin/python ] || make install
    ;;
esac
if [ ! -x .venv/bin/python ]; then
  # `down` must work even without the virtualenv.
  exec python3 deploy/cluster.py "$@"
fi
if [ "${1:-}" = drill ]; then
  shift
  exec .venv/bin/python deploy/drills.py "$@"   # the drills import the cluster, not the other way
fi
exec .venv/bin/python deploy/cluster.py "$@"
