"""The search service, one subpackage per place its code runs, in the order of the flow:
spec (YAML -> typed spec, no Ray) -> prepare (the launcher, before Ray) -> search (the driver
process: Tune) -> trial (inside a trial or a Ray Train worker) -> tracking (MLflow) -> results
(the record, summary, best/, the report; read from files).

The public entry points for users' own scripts are ``load_spec`` and ``load_model``; the
command line is ``launch.py``.
"""

from trainables.spec.schema import SearchSpec, SpecError
from trainables.spec.loading import load_spec
from trainables.trial.checkpoints import load_config, load_model

__all__ = ["SearchSpec", "SpecError", "load_config", "load_model", "load_spec"]
