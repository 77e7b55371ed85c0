"""MLflow, written from the driver only (runs.py): a parent run per search, a child per trial,
as a projection of the search's record; journalled while a server is down."""
