"""Train/validation splits, saved with a run to reproduce it: of numbered items (index.py,
optionally stratified by label) and of non-overlapping spatial windows of cubes (windows.py).
"""
