#!/bin/sh
# `make run`: the agent (not as PID 1) supervising examples/services.toml,
# with all state under ./run. In another terminal:
#   PACT_AGENT_SOCKET=run/agent.sock target/release/pact service status
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/target/release
state=$top/run
mkdir -p "$state"
sed "s|@BIN@|$bin|g" "$top/examples/services.toml" > "$state/services.toml"

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
vcluster = "ml-training"
state_dir = "$state"
services_file = "$state/services.toml"

[agent.supervisor]
cgroup_root = "$root"
TOML

cat <<MSG
pact-agent: supervising $(grep -c '^\[vcluster' "$state/services.toml") example services (cgroup root: $root)
  try, in another terminal:
    export PACT_AGENT_SOCKET=$state/agent.sock
    $bin/pact status
    $bin/pact service status
    $bin/pact service restart chronyd
    $bin/pact service logs lattice-node-agent
  Ctrl-C stops every service in reverse order.
MSG
cgroup_arg=""
[ "$root" = none ] && cgroup_arg="--cgroup-root none"
# shellcheck disable=SC2086
exec "$bin/pact-agent" --config "$state/agent.toml" $cgroup_arg
