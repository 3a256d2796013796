"""One exception type per kind of user mistake, raised at the boundary with the offending input named.

Entry points catch `WorldflowError`, print its message and exit non-zero (see `worldflow.cli`).
"""


class WorldflowError(Exception):
    """Base class: a mistake in what the user gave us (config, data, checkpoint, environment)."""


class ConfigError(WorldflowError):
    """An unknown, missing or invalid configuration key or value."""


class DataError(WorldflowError):
    """A missing, corrupt or wrongly shaped dataset, file or array."""


class CheckpointError(WorldflowError):
    """A missing, corrupt or incompatible checkpoint."""


class EnvError(WorldflowError):
    """An unknown environment or task, or an action of the wrong shape."""


class TrainingError(WorldflowError):
    """A run that cannot continue (e.g. a NaN loss)."""
