"""The errors a user can cause in evaluation; each message names the value and the fix.

`EvalError` is a ValueError so that `gpt2-jax eval` prints it as one `error: ...` line and exits
with status 2, like every other command's user errors.
"""

from __future__ import annotations


class EvalError(ValueError):
    """An evaluation task, data file, option or vocabulary cannot be used as given."""
