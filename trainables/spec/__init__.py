"""YAML -> a typed, validated spec (no Ray): runs in the launcher before anything starts. (It
imports torch through ``data`` and ``models``, whose registries validate the data kind and the
model's arguments.)

schema.py: the spec's sections and ``load_spec``; distributions.py: the search distributions;
resources.py: what a trial asks of the cluster, and how many run at once.
"""
