"""cluster.yaml (AWS) and cluster-onprem.yaml pass Ray's own cluster-config validation, so a typo
fails CI, not `ray up`; both run the same node commands (cluster/node.sh), the ones
tests/test_ray_up.py runs with `ray up` for real."""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.specs import PROJECT_ROOT

CLUSTER = yaml.safe_load((PROJECT_ROOT / "cluster.yaml").read_text())
ONPREM = yaml.safe_load((PROJECT_ROOT / "cluster-onprem.yaml").read_text())
NODE_SH = (PROJECT_ROOT / "cluster" / "node.sh").read_text()
COMMANDS = ("setup_commands", "head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def _validate(config: dict) -> None:
    """What `ray up` does before it starts anything: fill in defaults, check the schema."""
    validate_config(prepare_config(copy.deepcopy(config)))


def _node_sh(subcommand: str) -> str:
    """The code of one subcommand of cluster/node.sh (its `case` branch), comments left out."""
    match = re.search(rf"^{subcommand}\)\n(.*?)^    ;;", NODE_SH, re.M | re.S)
    assert match, f"cluster/node.sh has no {subcommand}"
    return "\n".join(line for line in match.group(1).splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("config", [CLUSTER, ONPREM], ids=["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_file_is_valid_for_ray_up(config: dict) -> None:
    _validate(config)


def test_both_files_run_the_same_node_commands() -> None:
    for key in COMMANDS:
        shared = [c for c in CLUSTER[key] if "cluster/node.sh" in c]
        assert shared and [c.split(" --")[0] for c in ONPREM[key]] == [c.split(" --")[0] for c in shared], key
    # Only the AWS file mounts its file system itself (on-prem: the lab's NFS is mounted already).
    assert [c for c in CLUSTER["setup_commands"] if "cluster/node.sh" not in c] == [
        c for c in CLUSTER["setup_commands"] if "mount -t efs" in c]
    for config in (CLUSTER, ONPREM):
        # The token made where `ray up` runs reaches every node; the project goes without .git.
        assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
        assert config["rsync_filter"] == [".gitignore"]
        # A ` #` in a command would turn the rest of the line into a YAML comment.
        assert not any(" #" in c for key in COMMANDS for c in config[key])


def test_head_runs_no_training_and_listens_on_loopback_only() -> None:
    head = _node_sh("start-head")
    assert "--num-cpus=0" in head and "--dashboard-host=127.0.0.1" in head
    assert "--host 127.0.0.1" in _node_sh("start-mlflow")
    assert "export RAY_AUTH_MODE=token" in NODE_SH
    gpu_types = [t for t in CLUSTER["available_node_types"] if t != CLUSTER["head_node_type"]]
    assert {CLUSTER["available_node_types"][t]["node_config"]["InstanceType"] for t in gpu_types} == {
        "g5.xlarge", "g5.12xlarge"}


def test_onprem_file_names_the_lab_machines_and_declares_their_gpus() -> None:
    provider = ONPREM["provider"]
    assert provider["type"] == "local" and provider["head_ip"] not in provider["worker_ips"]
    assert "--num-gpus=" in " ".join(ONPREM["worker_start_ray_commands"])
    # A worker never runs `ray stop`: it would stop a head sharing its machine.
    assert "ray stop" not in _node_sh("start-worker")


def test_a_typo_fails_validation() -> None:
    broken = copy.deepcopy(CLUSTER)
    broken["available_node_types"]["worker.gpu1"]["min_worker"] = 1  # misspelt min_workers
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        _validate(broken)
    broken = copy.deepcopy(ONPREM)
    broken["provider"]["worker_ip"] = broken["provider"].pop("worker_ips")
    with pytest.raises(BaseException):  # Ray's cli_logger.abort: "Please supply ... worker_ips"
        _validate(broken)
