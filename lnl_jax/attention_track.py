"""wᵍ of a few fixed test faces over training (Fig. 11–12), kept in workdir/attention_track.npz."""
from __future__ import annotations

import os

import jax
import numpy as np

from lnl_jax import inference, io
from lnl_jax.data import pipeline


class AttentionTracker:
  """wᵍ of a few fixed test faces over training (Fig. 11–12), kept in workdir/attention_track.npz."""

  def __init__(self, workdir, records, config, parallel, eval_step, step):
    self.path = os.path.join(workdir, 'attention_track.npz')
    self.eval_step, self.parallel = eval_step, parallel
    self.k = min(config.train.track_faces, len(records), config.train.batch_size)
    self._faces = records.subset(np.arange(self.k))
    self._batch_size, self._image_size = config.train.batch_size, config.data.image_size
    self._batch = None
    self.steps, self.weights = [], []
    if os.path.exists(self.path):
      with np.load(self.path) as saved:
        keep = saved['steps'] <= step
        self.steps, self.weights = list(saved['steps'][keep]), list(saved['w_global'][keep])

  @property
  def batch(self) -> dict:
    """The tracked faces' batch, read when first needed (not before the first train step). Padded
    to the train batch size so that the eval step compiled for evaluation is reused."""
    if self._batch is None:
      self._batch = next(iter(pipeline.eval_batches(self._faces, batch_size=self._batch_size,
                                                    image_size=self._image_size)))
    return self._batch

  def record(self, params, step):
    out = inference.run_padded(self.eval_step, params, self.parallel, self.batch['image'])
    self.steps.append(step)
    self.weights.append(out['w_global'][:self.k])

  def save(self):
    if jax.process_index() == 0 and self.steps:
      io.write_atomic(self.path, lambda f: np.savez(
          f, steps=np.array(self.steps), w_global=np.stack(self.weights),
          images=self.batch['image'][:self.k]))
