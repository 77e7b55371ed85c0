"""cluster.yaml passes Ray's own cluster-config validation, so a typo fails CI, not `ray up`."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.specs import PROJECT_ROOT

CLUSTER = yaml.safe_load((PROJECT_ROOT / "cluster.yaml").read_text())


def _validate(config: dict) -> None:
    """What `ray up` does before it starts anything: fill in defaults, check the schema."""
    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_is_valid_for_ray_up() -> None:
    _validate(CLUSTER)


def test_head_runs_no_training_and_listens_on_loopback_only() -> None:
    start = " ".join(CLUSTER["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--dashboard-host=127.0.0.1" in start
    assert "--host 127.0.0.1" in " ".join(CLUSTER["head_setup_commands"])  # the MLflow server
    gpu_types = [t for t in CLUSTER["available_node_types"] if t != CLUSTER["head_node_type"]]
    assert {CLUSTER["available_node_types"][t]["node_config"]["InstanceType"] for t in gpu_types} == {
        "g5.xlarge", "g5.12xlarge"}


def test_a_typo_fails_validation() -> None:
    broken = copy.deepcopy(CLUSTER)
    broken["available_node_types"]["worker.gpu1"]["min_worker"] = 1  # misspelt min_workers
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        _validate(broken)
