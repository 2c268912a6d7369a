#!/usr/bin/env bash
# Starts the local stack in the foreground: control-plane (embedded store), demo upstream and
# Envoy with 2 workers. Ctrl-C stops all three. Called by `make run` after building.
set -euo pipefail
cd "$(dirname "$0")/.."

state=.tollgate
mkdir -p "$state"
chmod 700 "$state"
# Secrets are generated once and kept in .tollgate/ (git-ignored), so a restart keeps them.
secret() {
  local file="$state/$1"
  if [[ ! -s $file ]]; then
    (umask 077 && od -An -tx1 -N"$2" /dev/urandom | tr -d ' \n' >"$file")
  fi
  cat "$file"
}
export TOLLGATE_ADMIN_TOKEN=${TOLLGATE_ADMIN_TOKEN:-$(secret admin-token 24)}
export TOLLGATE_KEY_SECRET=${TOLLGATE_KEY_SECRET:-$(secret key-secret 32)}
# Tenants survive a restart of `make run` (unless REDIS_URL points the stack at Redis): they
# live in the embedded registry, .tollgate/registry.redb, created on first start. A state file
# an earlier `make run` left (.tollgate/state.json) is imported into it once, then renamed
# state.json.migrated.
if [[ -z ${REDIS_URL:-} ]]; then
  export TOLLGATE_REGISTRY=${TOLLGATE_REGISTRY:-$state/registry.redb}
  export TOLLGATE_STATE_FILE=${TOLLGATE_STATE_FILE:-$state/state.json}
fi

# The stack, in the foreground until Ctrl-C or until one of its processes exits.
serve() {
  # (Inside the job, without job control: Ctrl-C reaches this shell, whose trap stops the
  # three.)
  set +m
  pids=()
  stop() {
    # The INT/TERM trap stays: a Ctrl-C that lands while stopping (or that races a process
    # exiting first) is noted like the first, never a half-done stop killed by the signal.
    trap - EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # `wait` returns early when the trap runs; all three are waited for.
    until wait 2>/dev/null; do :; done
  }
  # Ctrl-C (or SIGTERM) is the documented way to stop: noted here, acted on after `wait` below.
  interrupted=0
  trap 'interrupted=1' INT TERM
  trap stop EXIT

  target/debug/tollgate-control-plane & pids+=($!)
  target/debug/tollgate-demo-upstream & pids+=($!)
  .venv/bin/envoy -c envoy/envoy.yaml --concurrency 2 --disable-hot-restart \
    --log-level warn --component-log-level wasm:info & pids+=($!)

  for _ in $(seq 100); do
    if curl -fs http://127.0.0.1:9901/ready >/dev/null && curl -fs http://127.0.0.1:8080/healthz >/dev/null; then
      break
    fi
    sleep 0.1
  done

  cat <<MSG

Tollgate is running. Envoy: http://127.0.0.1:10000   Control-plane admin (internal): http://127.0.0.1:8081
Admin token: $TOLLGATE_ADMIN_TOKEN

Try it in another terminal:

  export TOLLGATE_ADMIN_TOKEN=$TOLLGATE_ADMIN_TOKEN
  KEY=\$(curl -s -X POST http://127.0.0.1:8081/admin/v1/tenants \\
        -H "Authorization: Bearer \$TOLLGATE_ADMIN_TOKEN" -H 'content-type: application/json' \\
        -d '{"name": "Acme", "tier": "standard"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  curl -i -H "x-api-key: \$KEY" http://127.0.0.1:10000/api/v1/ingest
  for i in \$(seq 60); do curl -s -o /dev/null -w '%{http_code} ' -H "x-api-key: \$KEY" http://127.0.0.1:10000/api/v1/ingest; done; echo

The 61st call of the minute (the last code printed) is 429, answered by Envoy at the edge.
Press Ctrl-C to stop.
MSG

  # Stop everything as soon as any one of the three exits (e.g. a port already in use), or on
  # Ctrl-C, which reaches the three too (one process group) and is a clean stop, not a failure.
  wait -n "${pids[@]}" || true
  stop
  if (( interrupted )); then
    echo "Tollgate stopped."
    exit 0
  fi
  echo "a Tollgate process exited (see its output above); stopped the rest" >&2
  exit 1
}

# On a terminal, Ctrl-C goes to the whole foreground process group, `make` included, which
# then reports the stop as an error ("make: *** [run] Interrupt") whatever this script
# returns. So the stack runs as a job of its own in the foreground (job control: its own
# process group, given the terminal): Ctrl-C reaches only the stack, and `make run` ends with
# this script's status, 0 for a Ctrl-C.
if [[ -t 0 ]]; then
  set -m
  serve &
  fg %% >/dev/null
else
  serve
fi
