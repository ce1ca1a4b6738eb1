#!/bin/sh
# `make run`: pact on one machine, all state under ./run:
#   - a one-node pact-journal (Raft of one, its log in run/journal/journal.db)
#     on 127.0.0.1:$PACT_RUN_PORT (default 9443; Raft on the next port);
#   - the example vCluster "ml-training" applied to it (first run only) and
#     this machine assigned to it as node "local";
#   - pact-agent (not as PID 1) booting from the journal: it streams the
#     overlay, starts the nine example services and follows later changes.
# Ctrl-C stops the services in reverse order, then the journal.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/target/release
state=$top/run
port=${PACT_RUN_PORT:-9443}
endpoint=127.0.0.1:$port
mkdir -p "$state"
sed "s|@BIN@|$bin|g" "$top/examples/services.toml" > "$state/services.toml"
for f in tour tour-delta; do
  sed -e "s|@BIN@|$bin|g" -e "s|@STATE@|$state|g" "$top/examples/$f.toml" > "$state/$f.toml"
done

# --- the journal ---------------------------------------------------------
bootstrap=""
[ -e "$state/journal/journal.db" ] || bootstrap="--bootstrap"
PACT_JOURNAL_PEERS="1=$endpoint" setsid "$bin/pact-journal" $bootstrap --node-id 1 \
  --data-dir "$state/journal" --listen "$endpoint" >"$state/journal.log" 2>&1 &
journal=$!
agent=""
stop() {
  [ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  kill -TERM "$journal" 2>/dev/null && wait "$journal" 2>/dev/null
  exit 0
}
trap stop INT TERM

export PACT_JOURNAL_ENDPOINTS=$endpoint
tries=0
until "$bin/pact" journal status >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ $tries -gt 100 ] || ! kill -0 "$journal" 2>/dev/null; then
    echo "run-local: the journal did not come up; its log:" >&2
    cat "$state/journal.log" >&2
    stop
  fi
  sleep 0.1
done
if ! "$bin/pact" group list | grep -q '^ml-training '; then
  "$bin/pact" apply "$state/services.toml" -m "make run: the example vCluster"
  "$bin/pact" node assign local ml-training
fi

# --- the agent -------------------------------------------------------------
# A cgroup v2 tree of our own when we may make one (root, v2 mounted).
root=none
if [ "$(id -u)" = 0 ]; then
  for base in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if [ -f "$base/cgroup.subtree_control" ]; then root=$base/pact-local; break; fi
  done
fi

cat > "$state/agent.toml" <<TOML
[agent]
node_id = "local"
state_dir = "$state"

[agent.supervisor]
cgroup_root = "$root"

[agent.journal]
endpoints = ["$endpoint"]
TOML

cat <<MSG
pact: a one-node journal on $endpoint (log: run/journal.log) and an agent
booting from it (cgroup root: $root). Try, in another terminal:
    export PACT_AGENT_SOCKET=$state/agent.sock PACT_JOURNAL_ENDPOINTS=$endpoint
    $bin/pact status
    $bin/pact service status
    $bin/pact apply run/tour.toml
    $bin/pact log
  Ctrl-C stops every service in reverse order, then the journal.
MSG
cgroup_arg=""
[ "$root" = none ] && cgroup_arg="--cgroup-root none"
# shellcheck disable=SC2086
"$bin/pact-agent" --config "$state/agent.toml" $cgroup_arg &
agent=$!
wait "$agent" || true
agent=""
stop
