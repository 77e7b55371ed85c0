"""When a search ends, each trial that will not train again keeps only its best checkpoint.

While a search runs, Tune keeps each trial's best checkpoint and its latest (a killed search
resumes from the latest). Once it has ended, a finished or early-stopped trial never trains
again, even when the search is resumed, so its latest is only worth keeping if it is also
its best: for a large model that is GiBs per trial. A failed trial keeps both: a resumed
search retries it from its latest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from trainables.summary import FAILED, TRIAL_DIR_PREFIX, TrialSummary

CHECKPOINT_PREFIX = "checkpoint_"


def keep_only_best_checkpoints(trials: list[TrialSummary], tune_dir: Path) -> None:
    for trial in trials:
        if trial.status == FAILED or not trial.checkpoint:
            continue
        best = Path(trial.checkpoint)
        for folder in (tune_dir / f"{TRIAL_DIR_PREFIX}{trial.trial_id}").glob(f"{CHECKPOINT_PREFIX}*"):
            if folder != best and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
