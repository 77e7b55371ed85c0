"""The launcher's work before Ray starts: the checks, folder preparation and ``--dry-run``
preview (preflight.py). The folder's lock, which the report reads too, is
trainables/folder_lock.py."""
