"""The search service, one subpackage per place its code runs, in the order of the flow:
spec (YAML -> typed spec, no Ray) -> prepare (the launcher, before Ray) -> search (the driver
process: Tune) -> trial (inside a trial or a Ray Train worker) -> tracking (MLflow) -> results
(the record, summary, best/, the report; read from files).

The public entry points for users' own scripts are ``load_spec`` and ``load_model``; the
command line is ``launch.py``.
"""

import importlib.util
from pathlib import Path


def _check_own_packages() -> None:
    """``data`` and ``models`` are top-level packages of this project. An editable install maps
    them with a finder that Python asks after sys.path, so a folder of that name in the working
    directory (a user's ``data/`` of CSV files), or another distribution's package, is found
    first and breaks every import below with a confusing error: name the clash instead."""
    root = Path(__file__).resolve().parent.parent
    for name in ("data", "models"):
        spec = importlib.util.find_spec(name)
        found = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
        if root / name not in found:
            where = ", ".join(map(str, found)) or (spec.origin if spec else "nowhere")
            raise ImportError(f"hpsearch needs its own '{name}' package ({root / name}), but Python finds "
                              f"'{name}' at {where} first (a folder or module of that name in the working "
                              f"directory or on sys.path shadows it): run from another directory, or rename it")


_check_own_packages()

from trainables.spec.schema import SearchSpec, SpecError  # noqa: E402 - after the check
from trainables.spec.loading import load_spec  # noqa: E402
from trainables.trial.checkpoints import load_config, load_model  # noqa: E402

__all__ = ["SearchSpec", "SpecError", "load_config", "load_model", "load_spec"]
