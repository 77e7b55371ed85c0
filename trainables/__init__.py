"""Everything that touches Ray: spec loading, the Tune search, the training loop, tracking.

The public entry points for users' own scripts are ``load_spec`` and ``load_model``; the
command line is ``launch.py``.
"""

from trainables.spec.schema import SearchSpec, SpecError, load_spec
from trainables.trial.checkpoints import load_config, load_model

__all__ = ["SearchSpec", "SpecError", "load_config", "load_model", "load_spec"]
