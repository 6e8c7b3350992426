#!/usr/bin/env bash
# Stop the cluster started by start-local-slurm.sh (same STATE_DIR argument).
STATE=${1:-/tmp/vit-class-embedding-slurm}
for daemon in slurmd slurmctld; do
  [ -f "$STATE/$daemon.pid" ] && kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null
done
exit 0
