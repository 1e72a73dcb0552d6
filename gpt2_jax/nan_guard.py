"""The host side of the NaN guard: count non-finite steps, hold back saves, roll back, explain.

Inside the jitted step (train.py) an update is applied only if the loss, the gradients AND the
parameters and optimizer state it produces are all finite; otherwise the step keeps the old
state. A finite but diverged state (say, parameters near 1e9 after one step at a huge learning
rate) passes that test and shows itself one step later, when its own loss is not finite. So
while non-finite steps are happening in a row, the state the run holds is suspect, and:

- no checkpoint is written (the loop asks `may_save`); checkpoint.save also refuses any
  non-finite array, so a checkpoint is written only from finite state;
- when the run stops (`nan_policy=stop`, or `nan_skip_limit` non-finite steps in a row with
  `nan_policy=skip`), it rolls back: with `skip`, checkpoints from the step before the streak
  on are moved aside to `STEP.nonfinite` (so a rerun resumes from a healthy one); with `stop`,
  the state before the failing step is saved (one bad batch does not lose the run);
- the error names the newest remaining checkpoint only after verifying it (checksums, then
  every array read back and tested finite).

References:
  Chowdhery et al. 2022 (PaLM) section 5.1: on loss spikes, restart from a checkpoint ~100
  steps before the spike and skip the batches seen in between.
"""

from __future__ import annotations

import pathlib
from typing import Callable

from gpt2_jax import checkpoint
from gpt2_jax.config import ConfigError
from gpt2_jax.finite import count_nonfinite

SUSPECT_SUFFIX = ".nonfinite"


class NonFiniteError(ConfigError, FloatingPointError):
    """The training stopped being finite and nan_policy says stop. Reported like a configuration
    error (one `error:` line) because the fix is one: a lower optim.lr, more warmup, clipping,
    or nan_policy=skip."""


class StopNonFinite(Exception):
    def __init__(self, step: int):
        self.step = step


class NanGuard:
    """Counts non-finite steps (`check`, one step behind the device) and says when to stop."""

    def __init__(self, policy: str, limit: int, skipped: int, say: Callable[[str], None]):
        self.policy, self.limit, self.say = policy, limit, say
        self.skipped = skipped  # over the whole run, resumes included (saved in the checkpoint meta)
        self.in_a_row = 0
        self.streak_start: int | None = None  # the first step of the current streak

    def check(self, step: int, finite) -> None:
        if bool(finite):
            self.in_a_row, self.streak_start = 0, None
            return
        self.skipped, self.in_a_row = self.skipped + 1, self.in_a_row + 1
        self.streak_start = self.streak_start or step
        if self.policy == "stop" or self.in_a_row >= self.limit:
            raise StopNonFinite(step)
        self.say(f"warning: step {step}: the loss, gradients or updated state are not finite; the update was "
                 f"skipped ({self.skipped} skipped in this run so far)")

    def may_save(self, step: int) -> bool:
        """False (with a warning) while a streak of non-finite steps is going on: the held state
        is the one those steps failed on."""
        if not self.in_a_row:
            return True
        self.say(f"warning: checkpoint {step} not written: the last {self.in_a_row} steps were not finite, so the "
                 f"state they started from is suspect")
        return False


def _verified(directory: pathlib.Path, step: int) -> str | None:
    """None if step `step` passes its checksums and holds only finite parameters, else why not."""
    try:
        _, _, params, _ = checkpoint.restore(directory, step=step)
    except checkpoint.CheckpointError as e:
        return str(e)
    bad = count_nonfinite(params)
    return f"its parameters hold {bad} non-finite values" if bad else None


def stop_report(guard: NanGuard, bad_step: int, mngr, save_last_good: Callable[[int], None]) -> NonFiniteError:
    """Rolls back as the module docstring says and returns the error to raise."""
    directory = pathlib.Path(str(mngr.directory))
    checkpoint.wait(mngr)
    if guard.policy == "stop" and bad_step > 1:
        last_good = bad_step - 1
        if last_good not in mngr.all_steps():
            save_last_good(last_good)
        checkpoint.wait(mngr, last_good)
    else:  # every process calls quarantine (process 0 renames, the others wait for it)
        first_suspect = (guard.streak_start or bad_step) - 1
        for step in [s for s in mngr.all_steps() if s >= first_suspect]:
            moved = checkpoint.quarantine(directory, step, SUSPECT_SUFFIX)
            guard.say(f"moved checkpoint {step} (the state the non-finite steps started from) to {moved}")
        mngr.reload()
    named, rejected = "no checkpoint was saved before it: a rerun starts from scratch", []
    for step in sorted(mngr.all_steps(), reverse=True):
        why = _verified(directory, step)
        if why is None:
            named = f"checkpoint {directory / str(step)} is verified finite and a rerun resumes from it"
            break
        rejected.append(f"step {step}: {why}")
    if rejected:
        named += f" (not usable: {'; '.join(rejected)})"
    why = ("nan_policy=stop" if guard.policy == "stop"
           else f"{guard.in_a_row} non-finite steps in a row (nan_skip_limit={guard.limit})")
    return NonFiniteError(
        f"the loss, gradients or updated state are not finite at step {bad_step} ({why}); no such update was applied "
        f"and {named}. Lower optim.lr, lengthen optim.warmup_steps or check the data; nan_policy=skip skips such steps")
