"""SIGTERM/SIGINT during training.

With steps run since the last checkpoint, the loop checkpoints after the current step and raises
Preempted (during an epoch's evaluation a single process stops it between two batches first:
`received_alone`). With nothing to save (while data loads, parameters initialise or the first step
compiles, or right after a checkpoint) the process ends at once, from a watcher thread:
Python runs signal handlers only between bytecodes of the main thread, which can sit in one XLA
compilation for a minute, longer than a cluster's grace period before SIGKILL.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from lnl_jax.errors import Preempted


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks after every step (and, with one process, the
  evaluation after every batch), and ends the process at once when a signal finds nothing unsaved
  (with several processes: before the first step). The loop calls `stepped` after a step and
  `saved` when the state equals a checkpoint. Must be created in the main thread."""

  def __init__(self):
    self.received = None
    self.unsaved = False  # steps ran since the newest checkpoint
    self.saved_step = None  # the newest checkpoint's step, if any
    self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
    # With several processes, once steps run, the stopping step is agreed collectively (`agreed`):
    # one process leaving on its own would leave the others waiting in a collective. Before the
    # first step every process leaves at once, as without handlers.
    self._solo = jax.process_count() == 1
    self._started = False
    self._pipe = os.pipe()
    os.set_blocking(self._pipe[1], False)
    # The C-level handler writes each signal's number to the pipe as it arrives, whatever the main
    # thread is doing; the watcher thread reads it (XLA releases the GIL while compiling).
    self._previous_wakeup_fd = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
    threading.Thread(target=self._watch, args=(self._pipe[0],), name='stop-signal-watcher',
                     daemon=True).start()

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum)

  def _watch(self, read_fd: int):
    while True:
      data = os.read(read_fd, 64)
      if not data:  # the write end closed
        os.close(read_fd)
        return
      for signum in data:
        if signum == 0:  # `restore`: stop watching
          os.close(read_fd)
          return
        if signum in STOP_SIGNALS and not self.unsaved and (self._solo or not self._started):
          name = signal.Signals(signum).name
          done = ('no step had run, nothing to save' if self.saved_step is None else
                  f'checkpoint of step {self.saved_step} written')
          print(f'preempted: {name} received: {done}; rerun the same command to resume.',
                file=sys.stderr, flush=True)
          # No cleanup: the main thread may be inside a compilation. Small files are written
          # atomically and checkpoints synchronously, so nothing is left half-written but an
          # ignored temporary file.
          os._exit(128 + signum)

  def stepped(self):
    self._started = self.unsaved = True

  def saved(self, step: int):
    self.saved_step = step  # before `unsaved`: the watcher reads them without a lock
    self.unsaved = False

  def received_alone(self) -> bool:
    """Whether a signal came that this process may act on at any moment, alone (one process)."""
    return self._solo and self.received is not None

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
    # The watcher first, so that no signal arriving meanwhile reaches both it and the old handler.
    signal.set_wakeup_fd(self._previous_wakeup_fd)
    os.write(self._pipe[1], b'\0')
    os.close(self._pipe[1])
    for s, handler in self._previous.items():
      signal.signal(s, handler)
