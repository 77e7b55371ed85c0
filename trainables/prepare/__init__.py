"""The launcher's work before Ray starts: one lock per output folder (folder_lock.py) and the
checks, folder preparation and ``--dry-run`` preview (preflight.py)."""
