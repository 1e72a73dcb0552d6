"""The one exception type of the scaling package: a sweep or a results table the user wrote is unusable.

Raised for a sweep file without `get_sweep()`, an unknown law, a missing CSV column, too few
points for a fit, non-positive or NaN values. The command line prints its message as one
`error: ...` line and exits with status 2 (gpt2_jax/cli.py).

References:
  gpt2_jax/data/errors.py (the same convention for data errors).
"""

from __future__ import annotations


class ScalingError(ValueError):
    """A sweep definition or a results table cannot be used; the message names the value and the fix."""
