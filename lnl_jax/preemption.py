"""SIGTERM/SIGINT during training: the loop checkpoints the current step, then raises Preempted."""
from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

from lnl_jax.errors import Preempted


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks after every step."""

  def __init__(self):
    self.received = None
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum)

  def agreed(self, step: int, every: int = 1) -> bool:
    """Whether to checkpoint and stop after `step`. Processes must all stop at the same step (the
    checkpoint is a collective), so with several they agree every `every` steps: one tiny
    all-gather, after which a process that got no signal stops too."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % every:
      return False
    signum = int(np.max(multihost_utils.process_allgather(np.int32(self.received or 0))))
    # Only the gathered value decides: a signal handled after this process's contribution was sent
    # is acted on at the next agreement, by every process alike.
    if signum and self.received is None:
      self.received = signal.Signals(signum)
    return bool(signum)

  def preempted(self, step: int) -> Preempted:
    return Preempted(f'{self.received.name} received: checkpoint of step {step} written; rerun the '
                     'same command to resume.', int(self.received))

  def restore(self):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
