"""Inside a trial actor or a Ray Train worker: the trainable (trainable.py), the one training
loop (loop.py), checkpoints (checkpoints.py) and per-epoch validation figures (figures.py)."""
