"""A trained model on uint8 faces: the eval step over zero-padded batches, and the image files it reads.

Every path that runs a model on images (training's evaluation and attention tracking, `analysis`,
`predict`, `export --check`) goes through `run_padded`, so the faces are fed exactly alike.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from lnl_jax import program_store, steps
from lnl_jax.data import decode, readers_common


def run_padded(eval_step, params, parallel: steps.Parallel, images: np.ndarray,
               batch_size: int | None = None) -> dict[str, np.ndarray]:
  """`eval_step`'s outputs (prediction, probs, w_global, w_local) for uint8 `images` (n, S, S, 3).

  With n < batch_size the batch is zero-padded to batch_size, so that one compiled program serves
  every batch, and the first n rows are returned. On several processes `images` are this process's
  rows of a full global batch, and every output row is global.
  """
  n = len(images)
  size = batch_size or n
  if n < size:
    images = np.concatenate([images, np.zeros((size - n,) + images.shape[1:], np.uint8)])
  out = jax.device_get(eval_step(params, parallel.put_batch({'image': images}, ('image',))))
  return {k: np.asarray(v)[:n] if n < size else np.asarray(v) for k, v in out.items()}


class Predictor:
  """A model with its parameters on the devices of `parallel` (default: the first local device):
  uint8 faces (N, S, S, 3) in, `eval_step`'s outputs out, in batches of `batch_size`. In a command,
  the eval step's lowered program is kept for later ones (`program_store`) unless `stored` is
  False."""

  def __init__(self, model, params, batch_size: int, parallel: steps.Parallel | None = None,
               stored: bool = True):
    self.parallel = parallel or steps.Parallel(jax.local_devices()[:1])
    self.params = jax.device_put(params, self.parallel.replicated)
    self.eval_step = self.parallel.jit_eval_step(
        model, program_store.directory() if stored else None)
    self.batch_size = batch_size

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    outs = [run_padded(self.eval_step, self.params, self.parallel,
                       images[start:start + self.batch_size], self.batch_size)
            for start in range(0, len(images), self.batch_size)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
  """(image files, problems): folders are walked recursively for image files (the readers' rule:
  `readers_common.is_image`), in sorted order; files are taken as given (whatever their
  extension); missing paths become problems."""
  files, problems = [], []
  for path in inputs:
    if os.path.isdir(path):
      found = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                     if readers_common.is_image(name))
      if not found:
        problems.append(f'no image files in folder {path}')
      files += found
    elif os.path.isfile(path):
      files.append(path)
    else:
      problems.append(f'no such file or folder: {path}')
  return files, problems


def load_face(path: str, image_size: int, cropper=None,
              warn: Callable[[str], None] = lambda message: None) -> np.ndarray:
  """(S, S, 3) uint8 pixels of `path`; with a cropper (`predict.FaceCropper`), of its largest
  face. Raises DataError."""
  if cropper is None:
    return decode.load_image(path, image_size=image_size)
  box = cropper.box(decode.load_image(path))
  if box is None:
    warn(f'no face found in {path}; using the whole image')
  return decode.load_image(path, box=box, image_size=image_size)
