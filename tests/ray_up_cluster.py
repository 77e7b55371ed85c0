"""`ray up` of cluster-onprem.yaml for real, run by tests/test_ray_up.py as PID 1's child inside
its own PID, mount and network namespaces, so that `ray stop` (in the head's start command and in
`ray down`) and Ray's ports, which listen on every address, reach nothing outside.

    unshare --fork --pid --mount-proc --net --mount -- bash -c '...' python ray_up_cluster.py WORK

Inside: loopback up; tmpfs over /run and /mnt; /tmp and the home folder overlaid (read as
they are, written to a tmpfs), with an empty /tmp/ray; WORK/results bound at /mnt/results (the
cluster file's shared folder) and WORK at /mnt/work; one sshd on 127.0.0.1:22 for the head, one
on 127.0.0.2:22 with its own /tmp/ray for the worker, taking a key made here. Then `ray up` (head 127.0.0.1, worker
127.0.0.2), a search submitted with `ray job submit --working-dir`, the worker's raylet killed
while a trial runs on it, the best checkpoint fetched with `ray rsync-down`, `ray down`, and a
look for anything left running. Prints one JSON line: the figures, or the error with logs.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
from tests.specs import recorded_epochs, tiny_mae_spec  # noqa: E402 - the project's root is on the path first

HEAD, WORKER = "127.0.0.1", "127.0.0.2"
# The home sshd gives the user, where commands over SSH find ~/.bashrc and ~/hpsearch.
HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
# WORK is seen inside at /mnt/work, its results/ at /mnt/results (the cluster file's shared folder).
WORK, RESULTS = Path("/mnt/work"), Path("/mnt/results")
FETCHED = WORK / "fetched"
DASHBOARD = f"http://{HEAD}:8265"
JOB_ID = "hpsearch-ray-up"
TRIALS = 2
# `ray up` starts the on-prem cluster's autoscaler v1, as the README says: with v2 (Ray 2.60's
# default) the local provider never launches the workers.
RAY_ENV = {**os.environ, "HOME": str(HOME), "RAY_UP_enable_autoscaler_v2": "0", "RAY_AUTH_MODE": "token"}


def sh(*command: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return done


def isolate(work: Path) -> None:
    """Loopback up, and this namespace's own Ray sessions (/tmp/ray), /run (sshd's /run/sshd),
    /mnt, and writes to /tmp (`ray up`'s config cache and SSH sockets) and home (keys, token,
    ~/.bashrc). /tmp and home stay readable as they are: they may hold the project, its
    virtual environment or this Python (pyenv)."""
    sh("ip", "link", "set", "lo", "up")
    (work / "results").mkdir(parents=True, exist_ok=True)
    # The binds come before the overlay of /tmp, which may hold WORK: the test reads it from outside.
    sh("mount", "-t", "tmpfs", "tmpfs", "/mnt")
    for inside, outside in ((WORK, work), (RESULTS, work / "results")):
        inside.mkdir()
        sh("mount", "--bind", str(outside), str(inside))
    sh("mount", "-t", "tmpfs", "tmpfs", "/run")
    Path("/run/sshd").mkdir()  # sshd's privilege separation folder
    for name, folder in (("tmp", Path("/tmp")), ("home", HOME)):
        layers = Path("/run/layers") / name
        for layer in ("upper", "work"):
            (layers / layer).mkdir(parents=True)
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={folder},upperdir={layers / 'upper'},workdir={layers / 'work'}", str(folder))
    # Ray's sessions, `ray stop`'s and the address file's folder: none of this machine's other clusters.
    Path("/tmp/ray").mkdir(exist_ok=True)
    sh("mount", "-t", "tmpfs", "tmpfs", "/tmp/ray")
    # Home's own keys and Ray token on fresh tmpfs.
    for secret in (HOME / ".ssh", HOME / ".ray"):
        secret.mkdir(mode=0o700, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", "mode=700", "tmpfs", str(secret))


def start_sshd(logs: Path) -> dict[str, subprocess.Popen]:
    """One sshd per node on port 22 (the head's autoscaler dials 22 whatever `ray up` used),
    accepting only a key made here. The worker's runs in a mount namespace of its own with its
    own /tmp/ray, as a second machine would: nodes that shared /tmp/ray would share a session folder,
    and the worker's restart would delete the job's working directory under the driver. Both
    share the home folder, as labs with NFS homes do, and /mnt/results."""
    keys = Path("/run/hpsearch-ssh")  # outside home: sshd's own files
    keys.mkdir(mode=0o700)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(HOME / ".ssh" / "id_ed25519"))
    (keys / "authorized_keys").write_text((HOME / ".ssh" / "id_ed25519.pub").read_text())
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host_ed25519"))
    daemons = {}
    for name, address in (("head", HEAD), ("worker", WORKER)):
        config = keys / f"sshd_{name}.conf"
        config.write_text("\n".join([
            f"ListenAddress {address}:22", f"HostKey {keys / 'host_ed25519'}",
            f"AuthorizedKeysFile {keys / 'authorized_keys'}", f"PidFile {keys / name}.pid",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            # Files on tmpfs made here; PAM has no session to open in a namespace.
            "StrictModes no", "UsePAM no", ""]))
        sshd = ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)]
        if name == "worker":  # exec: the Popen's pid is sshd's
            sshd = ["unshare", "--mount", "--", "bash", "-c", 'mount -t tmpfs tmpfs /tmp/ray && exec "$@"', "bash",
                     *sshd]
        daemons[name] = subprocess.Popen(sshd, stdout=(logs / f"sshd-{name}.log").open("w"),
                                         stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    for name, address in (("head", HEAD), ("worker", WORKER)):
        while sh("ssh", "-i", str(HOME / ".ssh" / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o",
                 "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", f"root@{address}", "true",
                 check=False, timeout=20).returncode != 0:
            if time.monotonic() > deadline or daemons[name].poll() is not None:
                raise RuntimeError(f"sshd did not answer on {address}:22:\n"
                                   + (logs / f"sshd-{name}.log").read_text()[-2000:])
            time.sleep(0.2)
    return daemons


def cluster_file(work: Path) -> Path:
    """The shipped cluster-onprem.yaml with this machine's addresses and user; its commands,
    file mounts and everything else as shipped."""
    config = yaml.safe_load((PROJECT_ROOT / "cluster-onprem.yaml").read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["auth"]["ssh_user"] = "root"
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ray(*args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    # `ray up` resolves file_mounts' "." against its working directory: the project.
    return sh(str(Path(sys.executable).parent / "ray"), *args, timeout=timeout, check=check, env=RAY_ENV,
              cwd=PROJECT_ROOT)


def api(path: str) -> dict:
    """The dashboard's REST API, with the cluster's token."""
    token = (HOME / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(DASHBOARD + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def alive_nodes() -> dict[str, str]:
    """node ip -> node id of the alive nodes; empty while the dashboard is not up."""
    try:
        nodes = api("/api/v0/nodes?limit=100")["data"]["result"]["result"]
    except OSError:
        return {}
    return {n["node_ip"]: n["node_id"] for n in nodes if n["state"] == "ALIVE"}


def wait_for(what: str, condition: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """condition()'s first true value; a dashboard that does not answer (busy on 2 CPUs) is
    asked again until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if found := condition():
                return found
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def processes() -> dict[int, str]:
    """pid -> command line of every live process of this namespace but this one and PID 1."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (1, os.getpid()):
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited; PID 1 (bash) reaps it
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            found[int(entry.name)] = command.decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
    return found


def worker_raylet() -> int:
    for pid, command in processes().items():
        if "/raylet " in command and f"--node_ip_address={WORKER} " in command + " ":
            return pid
    raise RuntimeError(f"no raylet of {WORKER} among:\n" + "\n".join(processes().values()))


def submit() -> None:
    raw = tiny_mae_spec("ray-up")
    # One size: both trials cost the same, and each lasts long enough to be killed mid-way.
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["tiny"]}
    raw["training"].update(epochs=6, max_steps_per_epoch=4)
    raw["scheduler"] = {"type": "none"}
    raw["budget"] = {"trials": TRIALS, "max_concurrent": TRIALS, "max_failures": 2, "time_limit_minutes": None}
    spec = RESULTS / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    ray("job", "submit", f"--address={DASHBOARD}", f"--submission-id={JOB_ID}", "--no-wait",
        f"--working-dir={PROJECT_ROOT}", "--", "python", "launch.py", "--space", str(spec),
        "--out", str(RESULTS / "search"), "--mlflow-uri", "http://127.0.0.1:5000", "--quiet")


def job_status() -> str:
    return api(f"/api/jobs/{JOB_ID}")["status"]


def trial_actor_on(node_id: str) -> bool:
    """Whether a trial runs on the node: the head trains nothing (--num-cpus=0), so every alive
    actor on the worker is a trial's."""
    actors = api("/api/v0/actors?limit=1000&detail=1")["data"]["result"]["result"]
    return any(a["state"] == "ALIVE" and a["node_id"] == node_id for a in actors)


def logs_tail(work: Path, daemons: dict[str, subprocess.Popen]) -> str:
    """What explains a failure: the job's output, the autoscaler's log, each node's raylet log
    (the worker's /tmp seen through its sshd's root), and this script's own logs."""
    parts = []
    job = ray("job", "logs", f"--address={DASHBOARD}", JOB_ID, check=False, timeout=60)
    parts.append("== job logs\n" + (job.stdout + job.stderr)[-3000:])
    for name, daemon in daemons.items():
        session = Path(f"/proc/{daemon.pid}/root/tmp/ray/session_latest/logs")
        for pattern in ("monitor.out", "monitor.log", "raylet.out") if name == "head" else ("raylet.out",):
            for path in sorted(session.glob(pattern)):
                parts.append(f"== {name} {path.name}\n" + path.read_text(errors="replace")[-2000:])
    for path in sorted((work / "logs").glob("*.log")):
        parts.append(f"== {path.name}\n" + path.read_text(errors="replace")[-2000:])
    return "\n".join(parts)


def run(outside: Path) -> dict:
    figures: dict = {}
    started = time.monotonic()
    isolate(outside)
    work, logs = WORK, WORK / "logs"
    logs.mkdir(exist_ok=True)
    FETCHED.mkdir(exist_ok=True)
    # Commands over SSH source ~/.bashrc: the venv of this Python comes first on their PATH.
    (HOME / ".bashrc").write_text(f"export PATH={Path(sys.executable).parent}:$PATH\n")
    daemons = start_sshd(logs)
    config = cluster_file(work)
    ray("get-auth-token", "--generate")
    up_at = time.monotonic()
    try:
        try:
            up = ray("up", "-y", "--no-config-cache", str(config), timeout=300)
            (logs / "ray-up.log").write_text(up.stdout + up.stderr)
            figures["ray_up_s"] = round(time.monotonic() - up_at, 1)
            nodes = wait_for("both nodes alive", lambda: (n := alive_nodes()) and {HEAD, WORKER} <= n.keys() and n,
                             timeout=180)
            figures["nodes_alive_s"] = round(time.monotonic() - up_at - figures["ray_up_s"], 1)

            submitted_at = time.monotonic()
            submit()
            worker_id = nodes[WORKER]
            wait_for("a trial running on the worker", lambda: trial_actor_on(worker_id), timeout=180)
            # Into its training (every trial runs on the worker: the head has no CPU for them).
            wait_for("a first epoch recorded", lambda: any(recorded_epochs(RESULTS / "search").values()), timeout=180)
            if (status := wait_for("the job's status", job_status, timeout=30)) != "RUNNING":
                raise RuntimeError(f"the job ended before the kill: {status}")
            os.kill(worker_raylet(), signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for("the worker restarted by the autoscaler",
                     lambda: alive_nodes().get(WORKER) not in (None, worker_id), timeout=240)
            figures["worker_restart_s"] = round(time.monotonic() - killed_at, 1)

            status = wait_for("the job ended", lambda: (s := job_status()) in ("SUCCEEDED", "FAILED", "STOPPED") and s,
                              timeout=300)
            figures["job_s"] = round(time.monotonic() - submitted_at, 1)
            if status != "SUCCEEDED":
                raise RuntimeError(f"job {status}")

            # The token as the nodes keep it (the home folder is the nodes' and the launcher's).
            figures["token_mode"] = oct((HOME / ".ray" / "auth_token").stat().st_mode & 0o777)
            # Fetched the way the README says, through the cluster's head.
            ray("rsync-down", str(config), str(RESULTS / "search" / "summary.json"), str(FETCHED) + "/")
            ray("rsync-down", str(config), str(RESULTS / "search" / "best") + "/", str(FETCHED / "best") + "/")
        except Exception:
            figures["error"] = traceback.format_exc() + "\n" + logs_tail(work, daemons)
        finally:
            ray("exec", str(config), "bash ~/hpsearch/cluster/node.sh stop-mlflow", check=False)
            down_at = time.monotonic()
            down = ray("down", "-y", str(config), check=False)
            (logs / "ray-down.log").write_text(down.stdout + down.stderr)
            figures["ray_down_s"] = round(time.monotonic() - down_at, 1)
            # `ray up`'s SSH connections persist 10 s after their last use (ControlPersist).
            deadline = time.monotonic() + 20
            daemon_pids = {d.pid for d in daemons.values()}
            while (left := {p: c for p, c in processes().items() if p not in daemon_pids}) \
                    and time.monotonic() < deadline:
                time.sleep(0.5)
            figures["left_running"] = sorted(left.values())
    finally:
        for daemon in daemons.values():
            daemon.terminate()
            daemon.wait(timeout=10)
    figures["total_s"] = round(time.monotonic() - started, 1)
    return figures


if __name__ == "__main__":
    if os.getpid() == 1 or os.getppid() != 1:
        sys.exit("run this as PID 1's child in its own namespaces: see tests/test_ray_up.py")
    print(json.dumps(run(Path(sys.argv[1]))), flush=True)
