"""A clean stop on a signal: the step under way finishes, a checkpoint is written, the run ends.

SIGTERM (``kill``, a scheduler's preemption or time limit, torchrun passing one on), SIGUSR1 (SLURM's
``--signal=USR1@90``) and a first Ctrl-C (SIGINT) ask for it; a second Ctrl-C, half a second or more after the
first, stops at once (KeyboardInterrupt), as before. With several processes one of them receiving a signal stops
them all after the same step: each step ends with one all-reduce of one number, so that no rank writes a checkpoint
while another has gone on to the next step's gradients (which would hang both).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import torch

log = logging.getLogger("mfvideo.train")

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
# A SIGINT this soon after the first is the same Ctrl-C passed on (torchrun forwards the terminal's to its workers,
# which have had it from the terminal too), not a second one.
ECHO_S = 0.5


class StopSignals:
    """Catches the stop signals while in its ``with`` block (main thread only; elsewhere it catches nothing) and
    restores the handlers it found on leaving."""

    def __init__(self, keeps: str = "a checkpoint"):
        self.keeps = keeps  # what the stop writes, as the warning says it
        self.received: int | None = None  # the first signal's number
        self.first_interrupt: float | None = None  # when the first Ctrl-C came
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                if (num := getattr(signal, name, None)) is not None:
                    self._previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for num, handler in self._previous.items():
            signal.signal(num, handler)
        self._previous.clear()

    def _handle(self, num: int, frame) -> None:
        now = time.monotonic()
        if num == signal.SIGINT:
            if self.first_interrupt is not None and now - self.first_interrupt > ECHO_S:
                raise KeyboardInterrupt  # the second Ctrl-C: at once
            self.first_interrupt = self.first_interrupt or now
        if self.received is None:
            self.received = num
            log.warning("%s received: stopping after this step, with %s%s", signal.Signals(num).name, self.keeps,
                        " (Ctrl-C again stops at once)" if num == signal.SIGINT else "")

    def agreed(self, accelerator) -> int | None:
        """The signal any process received (the largest number), the same on every rank; None if none did."""
        if accelerator.num_processes == 1:
            return self.received
        mine = torch.tensor([self.received or 0], device=accelerator.device)
        got = int(accelerator.reduce(mine, "max").item())
        return got or None


def ignore_in_worker(_worker_id: int = 0) -> None:
    """A data worker's ``worker_init_fn``: the stop signals are the training process's to act on. A Ctrl-C or a
    scheduler's signal reaches the whole process group; a worker forked with the trainer's handler would announce the
    stop once more each, and one with the default action would die in the middle of the step that is to finish."""
    for name in SIGNALS:
        if (num := getattr(signal, name, None)) is not None:
            signal.signal(num, signal.SIG_IGN)
