"""DDP under TorchTrainer: 2 workers at batch b follow the same trajectory as 1 worker at 2b, and
rank 0's checkpoints land where a one-worker trial's do (and load as its do)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tests.fault_models  # noqa: F401  registers faulty_autoencoder in this process too
from models import create_model
from tests.specs import tiny_mae_spec, write_spec
from trainables import load_config, load_model, load_spec
from trainables.trial.checkpoints import load_state
from trainables.search.run import SearchOptions, launch_search

pytestmark = pytest.mark.slow

BATCH = 4
STEPS = 3


def _train(tmp_path: Path, name: str, workers: int, batch_size: int) -> tuple[dict, Path]:
    raw = tiny_mae_spec(name)
    raw["imports"] = ["tests.fault_models"]
    raw["model"] = {"name": "faulty_autoencoder",
                    "args": {"in_chans": 10, "fault": "none", "marker_dir": str(tmp_path / "markers")}}
    raw["metric"] = "val_mse"
    # window == crop and no flips: every item is fixed, so only the sampler decides the batches.
    raw["data"].update(crop=8, window=8, flip=False)
    raw["training"].update(epochs=1, batch_size=batch_size, max_steps_per_epoch=STEPS, lr=0.05,
                           warmup_epochs=0, schedule="constant", grad_clip_norm=None)
    raw["search"] = {"training.seed": {"type": "grid", "values": [0]}}
    raw["searcher"] = {"type": "random", "seed": 0}
    raw["scheduler"] = {"type": "none"}
    raw["resources"] = {"workers": workers, "cpus_per_worker": 1}
    raw["budget"] = {"trials": 1}
    folder = tmp_path / name
    folder.mkdir()
    spec, _ = load_spec(str(write_spec(folder, raw)))
    out = folder / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)
    return summary, out


def test_two_workers_match_one_worker_with_twice_the_batch(ray_cluster, tmp_path: Path) -> None:
    single, single_out = _train(tmp_path, "single", workers=1, batch_size=2 * BATCH)
    ddp, ddp_out = _train(tmp_path, "ddp", workers=2, batch_size=BATCH)
    # The two-worker trial ran as a Ray Train run (its folder), the one-worker trial in the trial process.
    (trial,) = ddp["trials"]
    assert (ddp_out / "ddp" / f"ddp-{trial['trial_id']}").is_dir() and not (single_out / "ddp").exists()
    # Rank 0 of the Ray Train run wrote its checkpoints where one-worker trials write theirs.
    assert trial["status"] == "finished"
    assert Path(trial["checkpoint"]) == ddp_out / "trials" / trial["trial_id"] / "epoch_001"
    assert load_config(ddp_out / "best")["resources"]["workers"] == 2
    assert isinstance(load_model(ddp_out / "best"), torch.nn.Module)
    single_weights = load_state(single_out / "best")["model"]
    ddp_weights = load_state(ddp_out / "best")["model"]
    assert single_weights.keys() == ddp_weights.keys()
    for key in single_weights:
        torch.testing.assert_close(ddp_weights[key], single_weights[key], rtol=1e-4, atol=1e-5)
    # The weights moved from their (seeded) start, or the comparison would say nothing.
    torch.manual_seed(0)
    initial = create_model("faulty_autoencoder", in_chans=10, fault="none", marker_dir=str(tmp_path / "markers"))
    assert not torch.allclose(single_weights["encode.weight"], initial.encode.weight, atol=1e-3)
    # Validation metrics are averaged over both ranks' shards: the same number either way.
    assert ddp["best"]["value"] == pytest.approx(single["best"]["value"], rel=1e-4)
