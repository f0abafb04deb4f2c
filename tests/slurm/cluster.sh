#!/usr/bin/env bash
# A single-node SLURM cluster on this host, for tests/test_slurm.py (and by hand):
#   tests/slurm/cluster.sh up DIR     start munged, slurmctld and slurmd with everything under DIR
#   tests/slurm/cluster.sh down DIR   stop them (only the processes whose pid files are in DIR)
# The node is this host (2 CPUs or what it has), with a pretend GPU: GresTypes=gpu, Gres=gpu:1 and gres.conf
# `File=/dev/null`, so that `sbatch --gpus=1` is really scheduled (one GPU job at a time). Plugins:
# proctrack/linuxproc, task/none, select/cons_tres with CR_Core_Memory; no accounting (clients use squeue).
# munged runs privately (its own key and socket under DIR); the daemons talk over loopback only. State, logs and
# pid files are under DIR; the config must be at SLURM's default place, /etc/slurm/slurm.conf (+ gres.conf),
# because the plugin's job step (snakemake-executor-plugin-slurm-jobstep) runs `srun` with every SLURM_*
# variable but a few removed, SLURM_CONF included. `up` refuses to replace a slurm.conf it did not write;
# `down` removes the ones it wrote.
# `up` needs root. Missing packages (slurm-wlm, munge) are installed with apt-get when R2L_SLURM_INSTALL=1
# or CI is set. Exit status of `up`: 0 running; 77 cannot be brought up here (the reason on stderr).
set -uo pipefail

cmd=${1:?usage: cluster.sh up|down DIR}
dir=${2:?usage: cluster.sh up|down DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
host=$(hostname -s)
ctld_port=${R2L_SLURMCTLD_PORT:-17817}
slurmd_port=${R2L_SLURMD_PORT:-17818}
partition=${R2L_SLURM_PARTITION:-gpu}
etc=/etc/slurm
marker="# Written by tests/slurm/cluster.sh"  # + " for DIR" on the first line of the config files it writes

unavailable() { echo "SLURM cannot be brought up here: $*" >&2; exit 77; }

stop_pid_file() {  # stop the process named in pid file $1 (only if it is still the named program $2)
    local file=$1 name=$2 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if [[ -r /proc/$pid/comm ]] && [[ $(cat "/proc/$pid/comm") == "$name" ]]; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
        [[ -e /proc/$pid ]] && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

down() {
    if [[ -s $dir/slurmctld.pid ]]; then
        timeout 10 scancel --partition "$partition" >/dev/null 2>&1 || true
        sleep 1
    fi
    stop_pid_file "$dir/slurmd.pid" slurmd
    stop_pid_file "$dir/slurmctld.pid" slurmctld
    stop_pid_file "$dir/munged.pid" munged
    for f in slurm.conf gres.conf; do
        if [[ -f $etc/$f ]] && [[ $(head -n 1 "$etc/$f") == "$marker for $dir" ]]; then rm -f "$etc/$f"; fi
    done
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ ${R2L_SLURM_INSTALL:-} == 1 || -n ${CI:-} ]] \
        || unavailable "${missing[*]} not installed (set R2L_SLURM_INSTALL=1, as root, to install them with apt-get)"
    command -v apt-get >/dev/null || unavailable "${missing[*]} not installed and there is no apt-get"
    echo "installing ${missing[*]} with apt-get" >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurm-wlm munge; } >"$dir/apt.log" 2>&1 || unavailable "apt-get install ${missing[*]} failed ($(tail -n 2 "$dir/apt.log"))"
}

write_config() {
    local mem
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( ${mem:-4096} * 9 / 10 ))  # leave some for the daemons and the submitting Snakemake
    local cpus
    cpus=$(nproc)
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$etc"
    for f in slurm.conf gres.conf; do
        if [[ -e $etc/$f ]] && [[ $(head -n 1 "$etc/$f") != "$marker for "* ]]; then
            unavailable "$etc/$f exists and was not written by this script (a real SLURM here?); not replacing it"
        fi
    done
    cat >"$dir/slurm.conf" <<CONF
$marker for $dir
# One node ($host) with $cpus CPUs, ${mem} MB and one pretend GPU.
ClusterName=r2ltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=3600
JobRequeue=1
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
Prolog=$dir/prolog.sh
PrologFlags=Alloc
Epilog=$dir/epilog.sh
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$partition Nodes=$host Default=NO MaxTime=INFINITE State=UP
CONF
    cat >"$dir/gres.conf" <<CONF
$marker for $dir
# The pretend GPU: a GRES whose device file is /dev/null.
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
CONF
    # Every job's start and end on the node, with the GPUs it holds, for the test to check that GPU jobs
    # never overlap (with PrologFlags=Alloc slurmd runs the prolog when the job is allocated the node, and the
    # epilog after it ends; the GPU is released only after the epilog).
    for phase in prolog epilog; do
        printf '#!/bin/sh\necho "$SLURM_JOB_ID %s $(date +%%s.%%N) gpus=$SLURM_JOB_GPUS" >> %s/jobtimes.log\n' \
            "$phase" "$dir" >"$dir/$phase.sh"
        chmod 755 "$dir/$phase.sh"
    done
    cp "$dir/slurm.conf" "$dir/gres.conf" "$etc/"
}

start_munge() {
    [[ -f $dir/munge/munge.key ]] || {
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$dir/munge/munge.key"
    }
    chmod 700 "$dir/munge"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        2>"$dir/munge/start.err" || unavailable "munged did not start: $(tail -n 3 "$dir/munge/start.err" "$dir/munge/munged.log" 2>/dev/null)"
}

wait_for_node() {  # until the node is idle with its GPU, or a timeout
    local state
    for _ in $(seq 60); do
        state=$(scontrol show node "$host" 2>/dev/null)
        if [[ $state == *"State=IDLE"* ]] && [[ $state == *"Gres=gpu:1"* ]]; then return 0; fi
        sleep 0.5
    done
    unavailable "the node did not come up idle with Gres=gpu:1 in 30 s: $(echo "$state" | grep -E 'State=|Gres=|Reason=' | tr -s ' ' | tr '\n' ' ') slurmctld.log: $(tail -n 3 "$dir/slurmctld.log" 2>/dev/null) slurmd.log: $(tail -n 3 "$dir/slurmd.log" 2>/dev/null)"
}

up() {
    [[ $(id -u) -eq 0 ]] || unavailable "not root (slurmd must run as root to start jobs)"
    install_packages
    for port in "$ctld_port" "$slurmd_port"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            unavailable "port $port is in use (another SLURM?); set R2L_SLURMCTLD_PORT / R2L_SLURMD_PORT"
        fi
    done
    down  # a previous run's daemons in this folder
    write_config
    start_munge
    slurmctld -i 2>"$dir/slurmctld.err" \
        || unavailable "slurmctld did not start: $(tail -n 3 "$dir/slurmctld.err" "$dir/slurmctld.log" 2>/dev/null)"
    slurmd 2>"$dir/slurmd.err" \
        || unavailable "slurmd did not start: $(tail -n 3 "$dir/slurmd.err" "$dir/slurmd.log" 2>/dev/null)"
    wait_for_node
    echo "SLURM is up: node $host, partition $partition, config $etc/slurm.conf, state and logs in $dir" >&2
}

case $cmd in
    up) up ;;
    down) down ;;
    *) echo "usage: cluster.sh up|down DIR" >&2; exit 2 ;;
esac
