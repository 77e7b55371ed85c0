"""YAML -> a typed, validated spec (no Ray): runs in the launcher before anything starts. (It
imports torch through ``data`` and ``models``, whose registries validate the data kind and the
model's arguments.)

loading.py: ``load_spec`` (the YAML file, ``--set``, every problem as one line); schema.py: the
spec's sections and the spec of one trial; section.py: their common base; distributions.py:
the search distributions; schedulers.py: the ``scheduler:`` kinds; resources.py: what a trial
asks of the cluster, and how many run at once.
"""
