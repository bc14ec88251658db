"""The errors dse raises on bad input: each says what was wrong and how to fix it."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DSEError", "DataError", "SearchSpaceError", "TrialsFailed"]


class DSEError(Exception):
    """Base class of every error dse raises on purpose."""


class ConfigError(DSEError, ValueError):
    """A configuration value is unknown or out of range."""


class DataError(DSEError):
    """A data set is missing, unreadable or malformed."""


class CheckpointError(DSEError):
    """A model checkpoint is missing, corrupt or does not fit the model."""


class SearchSpaceError(DSEError, ValueError):
    """A search space does not fit the model (e.g. a layer the model lacks)."""


class TrialsFailed(DSEError):
    """Trials failed in a row (a broken setup, not bad luck): the search stopped, keeping what it finished."""
