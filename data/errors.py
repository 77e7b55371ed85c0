"""The one exception type the data package raises for bad files or settings."""


class DataError(ValueError):
    """A data file or data setting is unusable.

    The message is a single line that names the file and the HDF5 dataset (or the
    config key) and says what was expected, so it reads well in a trial's log.
    It subclasses ValueError so that, raised inside a pydantic validator, it is
    reported like any other validation failure.
    """
