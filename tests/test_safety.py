"""Safe by default: loopback-only dashboard with token auth, data-only checkpoints, safe YAML,
no way out of the output folder, and resources no node has refused at once."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.processes import launch_py, run_to_end
from tests.specs import tiny_mae_spec, write_spec
from trainables import load_spec
from trainables.outputs import CHECKPOINT_STATE_FILE
from trainables.trial.checkpoints import load_state
from trainables.outputs import RECORD_FILE
from trainables.search.cluster import connect
from trainables.prepare.preflight import prepare_output
from trainables.search.run import SearchOptions, launch_search
from trainables.spec.schema import SpecError


class Payload:
    """Pickling this runs code on load, which weights_only loading must refuse."""

    def __reduce__(self):
        return (print, ("unsafe code ran",))


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {}, "payload": Payload()}, tmp_path / CHECKPOINT_STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_state(tmp_path)


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path) -> None:
    spec_file = tmp_path / "evil.yaml"
    spec_file.write_text("experiment: !!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(SpecError, match="evil.yaml: line 1: not valid YAML"):
        load_spec(str(spec_file))


@pytest.mark.parametrize("name", ["../outside", "/etc/cron.d/x", "a/b", ".hidden"])
def test_experiment_name_cannot_leave_the_results_folder(tmp_path: Path, name: str) -> None:
    spec_file = write_spec(tmp_path, tiny_mae_spec())
    with pytest.raises(SpecError, match="experiment: String should match pattern"):
        load_spec(str(spec_file), [f"experiment={name}"])


@pytest.mark.slow
def test_dashboard_listens_on_loopback_and_wants_the_token(ray_cluster) -> None:
    url, _ = connect()  # the session's cluster, already running
    assert url is not None and url.startswith("127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{url}/api/version", timeout=10)
    assert refused.value.code == 401
    token = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token"],
                           capture_output=True, text=True, timeout=60).stdout.strip()
    request = urllib.request.Request(f"http://{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["ray_version"]


@pytest.mark.slow
def test_resources_no_node_has_are_refused_at_once(ray_cluster, tmp_path: Path) -> None:
    raw = tiny_mae_spec("too-big")
    raw["resources"] = {"workers": 1, "cpus_per_worker": 64}
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    out = tmp_path / "out"
    with pytest.raises(SpecError, match="no trial can ever start: a worker needs 64 CPU and 0 GPU, "
                                        "but the largest node has 2 CPU"):
        launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)
    assert not (out / RECORD_FILE).exists()  # nothing started, so the same folder can be used again
    assert prepare_output(spec, out, resume=False) is False


@pytest.mark.slow
def test_cli_refuses_impossible_resources_with_one_line(tmp_path: Path) -> None:
    raw = tiny_mae_spec("too-many-gpus")
    raw["resources"] = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, "use_gpu": "yes"}
    spec_file = write_spec(tmp_path, raw)
    result = run_to_end(launch_py("--space", str(spec_file), "--out", str(tmp_path / "out")))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [error_lines[0]] and "needs 1 CPU and 1 GPU" in error_lines[0], result.stderr
    assert error_lines[0].startswith(f"error: {spec_file.name}: resources: no trial can ever start")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_data_folder_of_the_users_own_that_shadows_the_services_is_named(tmp_path: Path) -> None:
    """A user's own `data` package in the working directory is found before the service's: the
    import says so in one line instead of failing on a missing name deep inside."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("")
    done = run_to_end([sys.executable, "-c", "import trainables"], cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: hpsearch needs its own 'data' package"), done.stderr[-2000:]
    assert f"finds 'data' at {(tmp_path / 'data').resolve()} first" in last
