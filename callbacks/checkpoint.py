"""Checkpoints that hold the state where training stopped, and resumes that say which limits apply.

:class:`LastStateCheckpoint` is Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint`
whose ``last.ckpt`` is also written when training stops between two regular saves.
:class:`ResumeLimitsCallback` makes ``max_time`` the budget of each run rather than of the whole
training, and logs on resume where training restarts and what will stop it (``experiments.fit``
adds it to every run).
"""

from __future__ import annotations

import datetime
from typing import Any, Literal, Optional, Union

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

STOP_REQUESTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SIGTERMException)
"""Exceptions that mean "stop now" (Ctrl-C; SIGTERM, which Lightning raises at a batch boundary), not a failure."""


class LastStateCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` whose ``last.ckpt`` always holds the state where training stopped.

    Lightning writes ``last.ckpt`` only together with another checkpoint (at a validation or an
    epoch end, and with ``monitor`` only when the metric improved), so a run stopped in between
    leaves an older ``last.ckpt`` behind. This subclass also writes it

    * when training ends (``max_steps``, ``max_epochs``, ``max_time``, early stopping), and
    * on a stop request: Ctrl-C (``KeyboardInterrupt``) and SIGTERM (Lightning's handler raises
      ``SIGTERMException`` at the end of the running batch).

    An error leaves ``last.ckpt`` at the last save before it: the failing state may be what broke.
    Nothing is written under ``fast_dev_run``, during the sanity check, outside fitting, or when
    this step was saved already.

    Args:
        save_last: as in :class:`ModelCheckpoint`, but ``True`` by default.
        **kwargs: :class:`ModelCheckpoint`'s other arguments (``dirpath``, ``monitor``, ``save_top_k`` ...).
    """

    def __init__(self, save_last: Optional[Union[bool, Literal["link"]]] = True, **kwargs: Any) -> None:
        super().__init__(save_last=save_last, **kwargs)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write ``last.ckpt`` unless this step is saved already."""
        self._save_stopped_state(trainer, "training ended")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Write ``last.ckpt`` on Ctrl-C or SIGTERM (not on an error)."""
        if isinstance(exception, STOP_REQUESTS):
            self._save_stopped_state(trainer, type(exception).__name__)

    def _save_stopped_state(self, trainer: Trainer, reason: str) -> None:
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        rank_zero_info(f"{reason}: saved the state at step {trainer.global_step} to {self.last_model_path}")


class ResumeLimitsCallback(Callback):
    """On resume, ``max_time`` counts from now; logs where training restarts and what will stop it.

    The step and epoch counters come back from the checkpoint, so ``max_steps`` and ``max_epochs``
    count the whole training. Lightning would also restore the elapsed time of ``max_time``'s
    Timer, so that a resume of a run stopped by its time limit stops again at its first step;
    here the Timer's stored state is dropped, and ``max_time`` is the budget of each run (as a
    scheduler's job time limit is).
    """

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Drop the stored Timer state (before the callbacks load theirs) and log the limits that apply."""
        stored = (checkpoint.get("callbacks") or {}).pop(Timer.__qualname__, None)
        elapsed = (stored or {}).get("time_elapsed", {}).get("train")
        step = checkpoint.get("global_step", 0)
        trained = f", after {_hms(elapsed)} of training" if elapsed is not None else ""
        rank_zero_info(f"Resuming from {trainer.ckpt_path}: saved at step {step}{trained}. "
                       f"This run stops at {_limits(trainer, elapsed)}")
        if trainer.max_steps is not None and 0 <= trainer.max_steps <= step:
            rank_zero_warn(f"the checkpoint is at step {step} and max_steps={trainer.max_steps}: nothing is left "
                           "to train; raise --trainer.max_steps to continue")


def _limits(trainer: Trainer, elapsed: Optional[float]) -> str:
    """The limits that stop this run, in words."""
    counts = [f"{name}={value}" for name, value in (("max_steps", trainer.max_steps), ("max_epochs", trainer.max_epochs))
              if value is not None and value >= 0]
    limits = [f"{' or '.join(counts)} (counted from the start of training)"] if counts else []
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    if timer is not None:  # before training starts, the time remaining is the whole max_time
        already = f", not counting the {_hms(elapsed)} already trained" if elapsed is not None else ""
        limits.append(f"max_time={_hms(timer.time_remaining())} from now{already}")
    return " or ".join(limits) or "no limit"


def _hms(seconds: Optional[float]) -> str:
    return str(datetime.timedelta(seconds=round(seconds or 0.0)))


__all__: list[str] = ["STOP_REQUESTS", "LastStateCheckpoint", "ResumeLimitsCallback"]
