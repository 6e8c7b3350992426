#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine with one fake GPU, for tests/test_slurm.py.
# Needs root and Debian packages (installed on first use). Two partitions share the node, as on
# a cluster: "cpu" (no GPU) and "gpu"; profiles/slurm/partitions.yaml names the same two.
# Accounting is off, so the profile queries job states with squeue.
# Usage: tests/slurm/start-local-slurm.sh [STATE_DIR]   (stop: tests/slurm/stop-local-slurm.sh)
set -euo pipefail
STATE=${1:-/tmp/vit-class-embedding-slurm}
HOST=$(hostname -s)
# Rules ask for up to 8 threads; declaring 8 CPUs (config_overrides) lets them run on a small
# machine, oversubscribed, instead of pending forever.
CPUS=$(( $(nproc) > 8 ? $(nproc) : 8 ))
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))

if [ "$(id -u)" -ne 0 ]; then
  echo "start-local-slurm.sh: needs root (it installs Debian packages and starts daemons)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$STATE"/{spool,state,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 status=none
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$HOST
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ReturnToService=2
# Finished jobs stay visible to scontrol for an hour: the test reads what each job was given.
MinJobAge=3600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF
echo "Name=gpu Count=1 File=/dev/null" > /etc/slurm/gres.conf

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
if running slurmctld; then scontrol reconfigure; else slurmctld; fi
running slurmd || slurmd
for _ in $(seq 30); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mix' && break
  sleep 1
done
sinfo
