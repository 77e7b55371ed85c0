"""YAML -> a typed, validated spec (no Ray, no torch): runs in the launcher before anything starts.

schema.py: the spec's sections and ``load_spec``; distributions.py: the search distributions;
resources.py: what a trial asks of the cluster, and how many run at once.
"""
