"""One root exception for the model toolchain, so callers can catch everything it raises at once."""


class ModelError(Exception):
    """Base of every error raised by ``finpulse.models``."""


class DataError(ModelError, ValueError):
    """A labelled data file cannot be read: missing file or column, unknown label, no rows."""


class ArtifactError(ModelError):
    """A model folder is missing a file or holds metadata that does not fit the code."""
