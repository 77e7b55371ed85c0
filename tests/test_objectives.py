"""Several objectives: the spec's ``objectives`` (one owner of what "better" means, the first
the primary), its one-line errors, and the cost metrics the loop measures for every trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.loop_throughput import LocalSession
from tests.specs import tiny_mae_spec, write_spec
from trainables.objective import ACCELERATOR_SECONDS, PARAMETERS, SECONDS_PER_SAMPLE, Objective
from trainables.spec.loading import load_spec
from trainables.spec.schema import SearchSpec, SpecError

QUALITY_AND_SIZE = [{"metric": "val_mse", "mode": "min"}, {"metric": PARAMETERS, "mode": "min"}]


def _several(raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    for key in ("metric", "mode", "scheduler"):
        raw.pop(key, None)
    return {**raw, "objectives": [dict(o) for o in QUALITY_AND_SIZE]}


def test_a_single_metric_is_a_list_of_one_objective(tmp_path: Path) -> None:
    spec, _ = load_spec(str(write_spec(tmp_path, tiny_mae_spec())))
    assert spec.objectives == [spec.objective] == [Objective(spec.metric, spec.mode)]
    assert not spec.multi_objective


def test_several_objectives_make_the_first_primary_and_pareto_the_default(tmp_path: Path) -> None:
    spec, _ = load_spec(str(write_spec(tmp_path, _several(tiny_mae_spec()))))
    assert spec.objectives == [Objective("val_mse", "min"), Objective(PARAMETERS, "min")]
    assert (spec.metric, spec.mode) == ("val_mse", "min") and spec.objective == spec.objectives[0]
    assert spec.multi_objective and spec.scheduler.type == "pareto"
    # The resolved spec (saved beside the results, read by every trial) reads back the same.
    assert SearchSpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize("change, expected", [
    (lambda raw: raw["objectives"][1].update(mode="lower"),
     "objectives.1.mode: Input should be 'min' or 'max' (got 'lower')"),
    (lambda raw: raw["objectives"].append({"metric": PARAMETERS, "mode": "min"}),
     f"objectives: metric {PARAMETERS} is named twice"),
    # A resolved spec holds both, agreeing; a metric that disagrees with objectives is refused.
    (lambda raw: raw.update(metric="val_loss"), "objectives: give either metric and mode"),
    (lambda raw: raw["objectives"][0].update(direction="min"),
     "objectives.0.direction: unknown key; expected one of: metric, mode"),
])
def test_bad_objectives_get_one_line_naming_the_key(tmp_path: Path, change, expected: str) -> None:
    raw = _several(tiny_mae_spec())
    change(raw)
    with pytest.raises(SpecError) as error:
        load_spec(str(write_spec(tmp_path, raw)))
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(str(tmp_path))


def test_the_loop_reports_every_cost_each_epoch_and_a_models_own(tmp_path: Path, monkeypatch) -> None:
    from models.mae_vit import MaskedAutoencoderViT
    from trainables.trial.loop import train_loop

    # A model's own costs() (the documented hook): one extra cost, and its own parameter count.
    monkeypatch.setattr(MaskedAutoencoderViT, "costs", lambda self: {"flops": 7.0, "params": 3}, raising=False)
    spec, _ = load_spec(str(write_spec(tmp_path, tiny_mae_spec())))
    session = LocalSession()
    train_loop(spec, session, tmp_path / "trial")
    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    for report in session.reports:
        assert report[PARAMETERS] == 3.0 and report["cost_flops"] == 7.0
        assert 0 < report[SECONDS_PER_SAMPLE] < report["epoch_time_s"]
    used = [r[ACCELERATOR_SECONDS] for r in session.reports]
    assert 0 < used[0] < used[1] < used[2]  # accumulated over the trial


def test_each_epochs_validation_figures_are_its_weights_alone(tmp_path: Path) -> None:
    """The loop keeps its running means from epoch to epoch (making new ones costs more than a
    short epoch); the last epoch's reported figures are still those of its own weights alone,
    not a mean over the epochs before."""
    import torch

    from data import build_splits
    from trainables.trial.checkpoints import latest_checkpoint, load_model
    from trainables.trial.loop import evaluate, train_loop

    spec, _ = load_spec(str(write_spec(tmp_path, tiny_mae_spec())))
    session = LocalSession()
    train_loop(spec, session, tmp_path / "trial")
    reported = [r["val_mse"] for r in session.reports]
    assert len(reported) == 3 and len(set(reported)) == 3  # the weights moved, so the figures did
    loader = torch.utils.data.DataLoader(build_splits(spec.data).val, batch_size=spec.training.batch_size)
    final = evaluate(load_model(latest_checkpoint(tmp_path / "trial")), loader, torch.device("cpu"))
    assert final["mse"] == pytest.approx(reported[-1], rel=1e-4)


def test_parameters_are_counted_on_the_model(tmp_path: Path) -> None:
    from trainables.trial.loop import train_loop

    raw = tiny_mae_spec()
    raw["training"]["epochs"] = 1
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    session = LocalSession()
    train_loop(spec, session, tmp_path / "trial")
    from models import create_model

    expected = sum(p.numel() for p in create_model(spec.model.name, **spec.model.args).parameters())
    assert session.reports[0][PARAMETERS] == expected
