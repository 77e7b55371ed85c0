"""HDF5 plumbing shared by the data kinds: the user's file or a generated one in the cache
(cache.py), opening and checking files (sources.py for tiled cubes, arrays.py for arrays with
a sample axis), a per-process handle (lazy_file.py), per-band statistics kept in a sidecar
(band_stats.py) and the in-memory preload decision (in_memory.py). Nothing here knows a kind.
"""
