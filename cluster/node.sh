#!/usr/bin/env bash
# The commands every node of a cluster runs, shared by cluster.yaml (AWS) and
# cluster-onprem.yaml (the lab's own machines), so the path the tests run is the one shipped.
#
#   node.sh setup         install the project's dependencies unless present; check the results folder
#   node.sh start-mlflow  the MLflow server on the head, loopback only (idempotent)
#   node.sh stop-mlflow   stop it (on-prem `ray down` leaves processes other than Ray's running)
#   node.sh start-head [ray start options]    Ray's head: dashboard on loopback, no training
#   node.sh start-worker [ray start options]  a worker joining $RAY_HEAD_IP
#
# RESULTS (default /mnt/results) is the shared folder every node mounts.
set -euo pipefail

RESULTS=${RESULTS:-/mnt/results}
PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MLFLOW_PID=/tmp/hpsearch-mlflow.pid

# Token authentication always: each node reads the token from ~/.ray/auth_token, which the
# cluster file's file_mounts copy from the machine that runs `ray up`.
export RAY_AUTH_MODE=token

# The address this node was reached at over SSH. For an on-prem cluster that is the address in
# the cluster file, which the autoscaler knows the node by (Ray's own guess may pick another
# interface of a multi-homed workstation); on a cloud it is the node's private address, as
# Ray would guess. Empty outside SSH: Ray guesses.
node_ip_option() {
    local ip
    ip=$(cut -d' ' -f3 <<<"${SSH_CONNECTION:-}")
    if [[ -n $ip ]]; then echo "--node-ip-address=$ip"; fi
}

# Ray opens a socket or file per worker and object: as many open files as the node allows
# (65536 where the hard limit permits it, as on the clouds' images).
raise_open_files() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

case ${1:-} in
setup)
    # The token opens the cluster to whoever reads it: its owner only, on machines that
    # others log in to (Ray writes it, and file_mounts copy it, readable by all).
    if [[ -f $HOME/.ray/auth_token ]]; then chmod 600 "$HOME/.ray/auth_token"; fi
    if python3 -c 'import sys, ray, torch, optuna, mlflow, h5py; sys.exit(not ray.__version__.startswith("2.60."))' 2>/dev/null; then
        echo "node.sh: dependencies present"
    else
        # torch pinned first so pip never pulls a multi-GB build by surprise (on GPU nodes the
        # PyPI wheel is the CUDA build).
        python3 -m pip install --upgrade pip
        python3 -m pip install "torch==2.13.0" -e "$PROJECT"
    fi
    if [[ ! -d $RESULTS || ! -w $RESULTS ]]; then
        echo "node.sh: $RESULTS is not a writable folder: mount the shared file system there" >&2
        exit 1
    fi
    ;;
start-mlflow)
    if [[ -f $MLFLOW_PID ]] && kill -0 "$(cat "$MLFLOW_PID")" 2>/dev/null; then
        echo "node.sh: MLflow already running (pid $(cat "$MLFLOW_PID"))"
        exit 0
    fi
    # Loopback only: reached through `ray attach CLUSTER.yaml --port-forward 5000`. The search
    # drivers are its only writers, so one worker process serves them.
    # setsid: its own process group, so stop-mlflow ends the server with its workers.
    setsid nohup mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
        --backend-store-uri "sqlite:///$RESULTS/mlflow.db" \
        --default-artifact-root "$RESULTS/mlflow-artifacts" >/tmp/hpsearch-mlflow.log 2>&1 &
    echo $! >"$MLFLOW_PID"
    ;;
stop-mlflow)
    if [[ -f $MLFLOW_PID ]]; then
        pid=$(cat "$MLFLOW_PID")
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$MLFLOW_PID"
    fi
    ;;
start-head)
    shift
    # `ray stop` first: a re-run of `ray up` restarts the head. It stops every Ray process of
    # the machine, a worker's sharing it included (the autoscaler starts that one again).
    ray stop
    raise_open_files
    # No training on the head (--num-cpus=0): it runs the search drivers, the dashboard and
    # MLflow. Its worker ports and agent port differ from a worker's (below), so a head and a
    # worker can share one machine, as in tests/test_ray_up.py.
    ray start --head --port=6379 --num-cpus=0 --dashboard-host=127.0.0.1 \
        --autoscaling-config="$HOME/ray_bootstrap_config.yaml" $(node_ip_option) \
        --dashboard-agent-listen-port=52365 --min-worker-port=10002 --max-worker-port=10999 \
        --disable-usage-stats "$@"
    ;;
start-worker)
    shift
    # No `ray stop` here: the autoscaler restarts a worker whose raylet died (its processes died
    # with it), and a worker must not stop a head that shares its machine.
    raise_open_files
    ray start --address="$RAY_HEAD_IP:6379" $(node_ip_option) \
        --dashboard-agent-listen-port=52366 --min-worker-port=11000 --max-worker-port=19999 \
        --disable-usage-stats "$@"
    ;;
*)
    echo "usage: node.sh setup|start-mlflow|stop-mlflow|start-head|start-worker [ray start options]" >&2
    exit 2
    ;;
esac
