"""The errors a user can cause in the data pipeline; each message names the value and the fix.

All derive from `DataError` (a ValueError), so a command-line front end can catch the family
with one class and print one line.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data-pipeline input or setting cannot be used (base class of the errors below)."""


class CorpusError(DataError):
    """An input corpus cannot be read or yields no usable documents."""


class ShardError(DataError):
    """A shard directory or shard file is missing, corrupt, or does not fit the run."""
