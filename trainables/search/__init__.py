"""The search, in the driver process: run.py is the one programmatic entry (``launch_search``);
searcher.py (the Optuna study), schedulers/ (one rung policy per ``scheduler:`` kind) and recording.py (Tune's events -> the record) wire Tune to
the search's record; cluster.py connects to Ray; console.py and metrics.py show progress;
ending.py writes what a search leaves."""
