"""Expressions of image files from a trained workdir: probabilities, and wᵍ/wˡ overlays as PNG.

  python -m lnl_jax.predict --workdir=DIR [--checkpoint=latest|best|STEP] [--json]
      [--overlay=OUT_DIR] [--batch_size=32] [--crop_faces] IMAGE_OR_FOLDER...

Folders are searched recursively for files with an image extension PIL knows; files are decoded by
`data.decode.load_image` (any format the dataset readers accept) and resized to the model's S×S.
Bad paths and unreadable images get one line each on stderr and are skipped; the exit status is 1
when nothing could be predicted or the workdir/flags are unusable (`lnl_jax.cli`).

The workdir is loaded by `lnl_jax.checkpoints.load_trained` (what `--checkpoint` accepts, where
class names come from).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from absl import app, flags
from matplotlib import cm as mpl_cm, colors as mpl_colors
from matplotlib.figure import Figure

from lnl_jax import cli, plots
from lnl_jax.checkpoints import Trained, load_trained
from lnl_jax.errors import ConfigError, DataError
from lnl_jax.inference import Predictor, expand_inputs, load_face

TOP_K = 3
FACE_MARGIN = 0.15  # --crop_faces: grow the detector's box by this fraction of its side, each side
# OpenCV 5 dropped the Haar cascades (its FaceDetectorYN needs a model file downloaded separately).
CV2_HINT = 'pip install "opencv-python-headless<5"'

FLAGS = flags.FLAGS
cli.uses_cache_flags(data=False)
cli.define_workdir_flags()
flags.DEFINE_bool('json', False, 'One JSON object per image on stdout.')
flags.DEFINE_string('overlay', None, 'Write <stem>.png overlays into this folder.')
flags.DEFINE_integer('batch_size', 32, 'Images per batch.', lower_bound=1)
flags.DEFINE_bool('crop_faces', False, 'Crop the largest face first (OpenCV Haar cascade; '
                  f'{CV2_HINT}); off for pre-aligned faces.')


@dataclasses.dataclass(frozen=True)
class Prediction:
  path: str
  image: np.ndarray  # (S, S, 3) uint8, what the model saw
  probs: np.ndarray  # (C,)
  w_global: np.ndarray  # (M,) wᵍ
  w_local: np.ndarray  # (M,) wˡ


# ---------------------------------------------------------------------------------------------
# Input files.


class FaceCropper:
  """Crops the largest face OpenCV's bundled Haar cascade finds (frontal faces), with a margin."""

  def __init__(self):
    try:
      import cv2  # pylint: disable=import-outside-toplevel
      path = os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml')
      self.cascade = cv2.CascadeClassifier(path)
    except (ImportError, AttributeError) as e:  # absent, or OpenCV ≥ 5 (no CascadeClassifier)
      raise ConfigError(f'--crop_faces needs OpenCV 4\'s Haar face detector ({type(e).__name__}: '
                        f'{e}): {CV2_HINT}') from None
    if self.cascade.empty():
      raise ConfigError(f'OpenCV could not load its face detector {path}: {CV2_HINT} --force-reinstall')
    self.cv2 = cv2

  def box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the largest face in (H, W, 3) uint8 RGB, or None."""
    grey = self.cv2.cvtColor(image, self.cv2.COLOR_RGB2GRAY)
    faces = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
      return None
    x, y, w, h = max((tuple(int(v) for v in f) for f in faces), key=lambda f: f[2] * f[3])
    return expand_box((y, x, h, w), FACE_MARGIN)


def expand_box(box, margin: float) -> tuple[int, int, int, int]:
  """(top, left, height, width) grown by `margin`·side on every side, made square about its centre
  (`decode.load_image` clips it to the image)."""
  top, left, h, w = box
  side = round(max(h, w) * (1 + 2 * margin))
  cy, cx = top + h / 2, left + w / 2
  return round(cy - side / 2), round(cx - side / 2), side, side


def predict_files(trained: Trained, files: Sequence[str], batch_size: int = 32,
                  cropper: FaceCropper | None = None,
                  warn: Callable[[str], None] = lambda message: None) -> Iterator[Prediction]:
  """Predictions of the readable `files`, in order, in batches; unreadable ones go to `warn`.

  Every batch is padded to the same size, so the model compiles once per run.
  """
  size = max(1, min(batch_size, len(files)))
  predictor = Predictor(trained.model, trained.params, size)
  pending: list[tuple[str, np.ndarray]] = []

  def run(batch):
    out = predictor(np.stack([image for _, image in batch]))
    for i, (path, image) in enumerate(batch):
      yield Prediction(path, image, out['probs'][i], out['w_global'][i], out['w_local'][i])

  for path in files:
    try:
      pending.append((path, load_face(path, trained.image_size, cropper, warn)))
    except DataError as e:
      warn(str(e))
    if len(pending) == size:
      yield from run(pending)
      pending = []
  if pending:
    yield from run(pending)


# ---------------------------------------------------------------------------------------------
# Output.


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int = TOP_K) -> list[tuple[str, float]]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [(class_names[i], float(probs[i])) for i in order]


def as_json(p: Prediction, class_names: Sequence[str]) -> dict:
  best = top_k(p.probs, class_names, 1)[0]
  return dict(file=p.path, prediction=best[0], probability=best[1],
              top3=[dict(label=n, probability=v) for n, v in top_k(p.probs, class_names)],
              probabilities=dict(zip(class_names, map(float, p.probs))),
              w_global=[float(v) for v in p.w_global], w_local=[float(v) for v in p.w_local])


def write_overlay(p: Prediction, class_names: Sequence[str], patch_boxes, path: str) -> str:
  """The face with its wᵍ heat-map, wˡ written on every patch, the predicted label as title."""
  image = plots.attention_overlay(p.image, p.w_global, patch_boxes)
  fig = Figure(figsize=(4.8, 4.4), layout='constrained')
  ax = fig.add_subplot()
  ax.imshow(image, interpolation='bilinear')
  ax.set_axis_off()
  grid = math.isqrt(len(p.w_local))
  for (top, left, bottom, right), value in zip(patch_boxes, p.w_local):
    ax.text((left + right) / 2 - 0.5, (top + bottom) / 2 - 0.5, f'{value:.2f}', ha='center',
            va='center', fontsize=8 if grid <= 4 else 6, color='white',
            bbox=dict(boxstyle='round,pad=0.1', facecolor='black', alpha=0.4, linewidth=0))
  lo, hi = float(p.w_global.min()), float(p.w_global.max())
  mappable = mpl_cm.ScalarMappable(mpl_colors.Normalize(lo, max(hi, lo + 1e-9)), plots.HEAT_CMAP)
  fig.colorbar(mappable, ax=ax, shrink=0.8, label='non-local weight wᵍ')
  label, prob = top_k(p.probs, class_names, 1)[0]
  ax.set_title(f'{label} ({prob:.1%})\n{os.path.basename(p.path)}', fontsize=10)
  fig.supxlabel('colour: wᵍ per patch · numbers: local weight wˡ', fontsize=7)
  return plots.save(fig, path)


def _overlay_path(out_dir: str, source: str, used: set[str]) -> str:
  """out_dir/<stem>.png; a stem met before gets -2, -3, … so no overlay overwrites another."""
  stem = os.path.splitext(os.path.basename(source))[0]
  name, k = stem, 1
  while name in used:
    k += 1
    name = f'{stem}-{k}'
  used.add(name)
  return os.path.join(out_dir, name + '.png')


def _table_row(p: Prediction, class_names, width: int) -> str:
  label, prob = top_k(p.probs, class_names, 1)[0]
  name = p.path if len(p.path) <= width else '…' + p.path[-(width - 1):]
  top = ', '.join(f'{n} {v:.3f}' for n, v in top_k(p.probs, class_names))
  return f'{name:<{width}}  {label:<12} {prob:>11.3f}  {top}'


# ---------------------------------------------------------------------------------------------
# Command line.


def predict(inputs: Sequence[str]) -> int:
  """Prints the predictions of `inputs` (and writes overlays); returns how many were predicted."""
  warn = lambda message: print(f'skipped: {" ".join(message.split())}', file=sys.stderr)
  cropper = FaceCropper() if FLAGS.crop_faces else None
  trained = load_trained(FLAGS.workdir, FLAGS.checkpoint)
  files, problems = expand_inputs(inputs)
  for problem in problems:
    warn(problem)
  width = min(max([len(f) for f in files] + [4]), 60)
  if not FLAGS.json and files:
    print(f'{"file":<{width}}  {"predicted":<12} {"probability":>11}  top-{TOP_K}')
  boxes, used, count = trained.model.geometry.boxes(), set(), 0
  for p in predict_files(trained, files, FLAGS.batch_size, cropper, warn):
    count += 1
    print(json.dumps(as_json(p, trained.class_names)) if FLAGS.json
          else _table_row(p, trained.class_names, width), flush=True)
    if FLAGS.overlay:
      write_overlay(p, trained.class_names, boxes, _overlay_path(FLAGS.overlay, p.path, used))
  return count


def main(argv: Sequence[str]) -> int:
  """Exit status 0 when at least one image was predicted; 1 otherwise (`lnl_jax.cli`)."""
  if len(argv) < 2:
    raise app.UsageError('Give at least one IMAGE_OR_FOLDER.')
  cli.setup_process()
  if not cli.run_or_exit(predict, argv[1:]):
    cli.fail('no image could be predicted.')
  return 0


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  cli.run(main)
