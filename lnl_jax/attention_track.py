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
    k = min(config.train.track_faces, len(records), config.train.batch_size)
    # Padded to the train batch size so that the eval step compiled for evaluation is reused.
    self.batch = next(iter(pipeline.eval_batches(records.subset(np.arange(k)),
                                                 batch_size=config.train.batch_size,
                                                 image_size=config.data.image_size)))
    self.k = k
    self.steps, self.weights = [], []
    if os.path.exists(self.path):
      with np.load(self.path) as saved:
        keep = saved['steps'] <= step
        self.steps, self.weights = list(saved['steps'][keep]), list(saved['w_global'][keep])

  def record(self, params, step):
    out = inference.run_padded(self.eval_step, params, self.parallel, self.batch['image'])
    self.steps.append(step)
    self.weights.append(out['w_global'][:self.k])

  def save(self):
    if jax.process_index() == 0 and self.steps:
      io.write_atomic(self.path, lambda f: np.savez(
          f, steps=np.array(self.steps), w_global=np.stack(self.weights),
          images=self.batch['image'][:self.k]))
