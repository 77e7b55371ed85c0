"""The search's record and what is read from it: record.py (the one owner of the search's
state), summary.py (summary.json, best/), search_data.py, report.py, plots.py and
report_html.py (the report, drawn from files only)."""
