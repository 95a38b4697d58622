"""The paper's figures: confusion matrices (Fig. 8–9), training curves, wᵍ maps (Fig. 10–12), wˡ
under occlusion (Fig. 13), and the share of wᵍ on the synthetic faces' crucial patches.

Pure functions of numpy arrays: each writes one PNG and returns its path. They use matplotlib's
object-oriented `Figure` API (rendered by Agg), so no display and no pyplot global state is needed.
Bad shapes raise ValueError naming the argument and the shape that was expected.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

HEAT_CMAP = 'jet'  # low weight blue, high weight red, as attention maps are usually drawn
HEAT_ALPHA = 0.5  # opacity of the heat-map over the face
MIN_CELL_PX_FOR_TEXT = 24  # annotate a patch only if it is drawn at least this many pixels wide
DPI = 100

Box = tuple[int, int, int, int]  # (top, left, bottom, right), as geometry.PatchGeometry.boxes()


def save(fig: Figure, path) -> str:
  """Writes `fig` as a PNG at `path` (its folder created); returns the path."""
  path = os.fspath(path)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=DPI, format='png', pil_kwargs=dict(compress_level=1))  # fast to write
  return path


def _grid_side(num_patches: int, name: str) -> int:
  n = math.isqrt(num_patches) if num_patches > 0 else 0
  if n * n != num_patches or n == 0:
    raise ValueError(f'{name} has {num_patches} patch weights per face; expected M = n×n '
                     '(a perfect square such as 4, 9 or 16).')
  return n


def confusion_matrix(cm, class_names: Sequence[str], path, title: str | None = None) -> str:
  """Row-normalised confusion matrix (rows = true class) in percent with counts, like Fig. 8–9."""
  cm = np.asarray(cm, np.float64)
  c = len(class_names)
  if cm.shape != (c, c):
    raise ValueError(f'cm has shape {cm.shape}; expected ({c}, {c}) for {c} class_names.')
  if not np.all(np.isfinite(cm)) or np.any(cm < 0):
    raise ValueError('cm must hold non-negative finite counts.')
  totals = cm.sum(axis=1, keepdims=True)
  pct = 100 * cm / np.maximum(totals, 1)  # an empty row stays 0 % rather than NaN
  accuracy = 100 * np.trace(cm) / max(cm.sum(), 1)
  side = 1.2 + 0.8 * c
  fig = Figure(figsize=(side + 1.5, side), layout='constrained')
  ax = fig.add_subplot()
  im = ax.imshow(pct, cmap='Blues', vmin=0, vmax=100)
  fig.colorbar(im, ax=ax, label='% of true class')
  for i in range(c):
    for j in range(c):
      colour = 'white' if pct[i, j] > 55 else 'black'
      ax.text(j, i, f'{pct[i, j]:.1f}%\n({int(cm[i, j])})', ha='center', va='center',
              fontsize=8, color=colour)
  ax.set_xticks(range(c), class_names, rotation=45, ha='right')
  ax.set_yticks(range(c), class_names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(f'{title or "Confusion matrix"} (accuracy {accuracy:.2f}%)')
  return save(fig, path)


def training_curves(history: Sequence[dict], path) -> str:
  """Loss (and learning rate, right axis) and accuracy against epoch, in two panels."""
  if not history or any('epoch' not in h for h in history):
    raise ValueError('history must be a non-empty list of dicts, each with an "epoch" key.')
  keys = ('train_loss', 'train_accuracy', 'test_accuracy', 'learning_rate')
  if not any(k in h for h in history for k in keys):
    raise ValueError(f'history has none of the plotted keys {keys}.')
  epoch = np.array([h['epoch'] for h in history], np.float64)
  series = {k: np.array([h.get(k, np.nan) for h in history], np.float64) for k in keys}
  present = {k: v for k, v in series.items() if np.any(np.isfinite(v))}

  def line(ax, key, **kwargs):
    ok = np.isfinite(series[key])
    return ax.plot(epoch[ok], series[key][ok], marker='.', label=key.replace('_', ' '), **kwargs)

  fig = Figure(figsize=(11, 4), layout='constrained')
  ax_loss, ax_acc = fig.subplots(1, 2)
  handles = line(ax_loss, 'train_loss', color='C0') if 'train_loss' in present else []
  if 'learning_rate' in present:
    ax_lr = ax_loss.twinx()
    handles += line(ax_lr, 'learning_rate', color='C3', linestyle=':')
    ax_lr.set_yscale('log')
    ax_lr.set_ylabel('learning rate')
  if handles:
    ax_loss.legend(handles=handles, loc='upper right')
  ax_loss.set(xlabel='epoch', ylabel='loss', title='Loss')
  for key, colour in (('train_accuracy', 'C0'), ('test_accuracy', 'C1')):
    if key in present:
      line(ax_acc, key, color=colour)
  if 'test_accuracy' in present:  # the paper reports the mean test accuracy of the last 10 epochs
    last = series['test_accuracy'][np.isfinite(series['test_accuracy'])][-10:]
    ax_acc.axhline(last.mean(), color='C1', linestyle='--', linewidth=1,
                   label=f'mean of last {len(last)}: {last.mean():.4g}')
  if ax_acc.lines:
    ax_acc.legend(loc='lower right')
  ax_acc.set(xlabel='epoch', ylabel='accuracy', title='Accuracy')
  return save(fig, path)


def _scaled_boxes(patch_boxes, num_patches: int, height: int, width: int) -> list[Box]:
  """Patch boxes in the image's pixels; boxes laid out for another image size are rescaled."""
  if patch_boxes is None:  # stretch the n×n grid over the image, without overlap
    n = _grid_side(num_patches, 'weights')
    return [(i * height // n, j * width // n, (i + 1) * height // n, (j + 1) * width // n)
            for i in range(n) for j in range(n)]
  boxes = np.asarray(patch_boxes, np.float64)
  if boxes.shape != (num_patches, 4):
    raise ValueError(f'patch_boxes has shape {boxes.shape}; expected ({num_patches}, 4) '
                     '(top, left, bottom, right) boxes, one per patch weight.')
  extent_y, extent_x = boxes[:, 2].max(), boxes[:, 3].max()  # the side S the boxes tile
  boxes = boxes * [height / extent_y, width / extent_x, height / extent_y, width / extent_x]
  return [tuple(int(v) for v in b) for b in np.rint(boxes)]


def attention_overlay(image, weights, patch_boxes=None, vmin=None, vmax=None) -> np.ndarray:
  """The face (H, W, 3) uint8 with each patch's weight painted over its box as a heat-map.

  Weights are mapped to colours on [vmin, vmax] (default: this face's min and max); where patches
  overlap their colours' values are averaged; pixels no patch covers keep the face unchanged.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'image has shape {image.shape}; expected (H, W, 3).')
  weights = np.asarray(weights, np.float64)
  if weights.ndim != 1:
    raise ValueError(f'weights has shape {weights.shape}; expected (M,) for one face.')
  h, w, _ = image.shape
  boxes = _scaled_boxes(patch_boxes, len(weights), h, w)
  lo = weights.min() if vmin is None else vmin
  hi = weights.max() if vmax is None else vmax
  heat = np.full_like(weights, 0.5) if hi <= lo else np.clip((weights - lo) / (hi - lo), 0, 1)
  total, count = np.zeros((h, w)), np.zeros((h, w))
  for (top, left, bottom, right), value in zip(boxes, heat):
    total[top:bottom, left:right] += value
    count[top:bottom, left:right] += 1
  covered = count > 0
  colour = colormaps[HEAT_CMAP](total / np.maximum(count, 1))[..., :3] * 255
  out = image.astype(np.float64)
  out[covered] = (1 - HEAT_ALPHA) * out[covered] + HEAT_ALPHA * colour[covered]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _as_uint8_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 1):  # grey faces
    images = np.repeat(images.reshape(images.shape[:3])[..., None], 3, axis=-1)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'images has shape {images.shape}; expected (K, H, W, 3).')
  if images.dtype != np.uint8:
    if images.min() < 0 or images.max() > 1:
      raise ValueError(f'images are {images.dtype}; expected uint8, or floats in [0, 1].')
    images = np.rint(images * 255).astype(np.uint8)
  return images


def attention_grid(images, weights, path, patch_boxes=None, titles=None, cols: int = 8,
                   face_inches: float = 2.0) -> str:
  """Fig. 10: each face with its n×n wᵍ map overlaid; cells show wᵍ×M (1.00 = uniform attention)."""
  images = _as_uint8_images(images)
  weights = np.asarray(weights, np.float64)
  k = len(images)
  if weights.ndim != 2 or len(weights) != k:
    raise ValueError(f'weights has shape {weights.shape}; expected ({k}, M) for {k} images.')
  m = weights.shape[1]
  n = _grid_side(m, 'weights')
  if titles is not None and len(titles) != k:
    raise ValueError(f'titles has {len(titles)} entries; expected one per image ({k}).')
  cols = max(1, min(cols, k))
  rows = -(-k // cols)
  fig = Figure(figsize=(cols * face_inches, rows * (face_inches + 0.3)), layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  annotate = face_inches * DPI / n >= MIN_CELL_PX_FOR_TEXT
  for ax in axes:
    ax.set_axis_off()
  for idx in range(k):
    ax = axes[idx]
    h, w = images.shape[1:3]
    ax.imshow(attention_overlay(images[idx], weights[idx], patch_boxes))
    if annotate:
      for (top, left, bottom, right), value in zip(
          _scaled_boxes(patch_boxes, m, h, w), weights[idx] * m):
        ax.text((left + right) / 2 - 0.5, (top + bottom) / 2 - 0.5, f'{value:.2f}', ha='center',
                va='center', fontsize=6 if n <= 4 else 5, color='white',
                bbox=dict(boxstyle='round,pad=0.1', facecolor='black', alpha=0.4, linewidth=0))
    if titles is not None:
      ax.set_title(str(titles[idx]), fontsize=8)
  fig.suptitle('wᵍ per patch: blue = the face\'s lowest, red = its highest'
               + ('\nnumbers: wᵍ×M (1.00 = uniform)' if annotate else ''), fontsize=8)
  return save(fig, path)


def _patch_colours(m: int):
  cmap = colormaps['tab20'] if m <= 20 else colormaps['viridis']
  return [cmap(i) if m <= 20 else cmap(i / (m - 1)) for i in range(m)]


def attention_over_time(steps, weights, path, labels=None) -> str:
  """Fig. 11–12: wᵍ of fixed faces against the training step, one line per patch, one panel per face."""
  steps = np.asarray(steps, np.float64)
  weights = np.asarray(weights, np.float64)
  if weights.ndim == 2:
    weights = weights[:, None]
  if steps.ndim != 1 or weights.ndim != 3 or len(weights) != len(steps):
    raise ValueError(f'steps {steps.shape} and weights {weights.shape} do not match; expected '
                     'steps (T,) and weights (T, M) or (T, K, M).')
  _, k, m = weights.shape
  _grid_side(m, 'weights')
  if labels is not None and len(labels) != k:
    raise ValueError(f'labels has {len(labels)} entries; expected one per face ({k}).')
  fig = Figure(figsize=(5 * k + 1.5, 3.8), layout='constrained')
  axes = fig.subplots(1, k, sharey=True, squeeze=False).ravel()
  colours = _patch_colours(m)
  for face, ax in enumerate(axes):
    for p in range(m):
      ax.plot(steps, weights[:, face, p], color=colours[p], linewidth=1.2, label=f'patch {p}')
    ax.axhline(1 / m, color='black', linestyle='--', linewidth=1, label='uniform 1/M')
    ax.set(xlabel='training step', title=str(labels[face]) if labels is not None else f'face {face}')
  axes[0].set_ylabel('non-local weight wᵍ')
  fig.legend(*axes[0].get_legend_handles_labels(), loc='outside right center', fontsize=7,
             ncols=1 if m <= 16 else 2)
  return save(fig, path)


def local_weights_occlusion(weights, baseline, path) -> str:
  """Fig. 13: how each patch's wˡ drops when patch i is occluded (row i of `weights`).

  Left: the drop baseline − wˡ as an M×M map (rows = occluded patch). Right: for every occluded
  patch, the drop of its own wˡ next to the mean drop of the other patches.
  """
  weights = np.asarray(weights, np.float64)
  baseline = np.asarray(baseline, np.float64)
  m = len(baseline)
  if baseline.ndim != 1 or weights.shape != (m, m):
    raise ValueError(f'weights {weights.shape} and baseline {baseline.shape} do not match; expected '
                     'weights (M, M) (row i: wˡ of every patch with patch i occluded) and baseline (M,).')
  _grid_side(m, 'baseline')
  drop = baseline[None, :] - weights  # drop[i, j]: fall of patch j's wˡ when patch i is occluded
  own = np.diag(drop)
  others = (drop.sum(axis=1) - own) / max(m - 1, 1)
  fig = Figure(figsize=(12, 4.8), layout='constrained')
  ax_map, ax_bar = fig.subplots(1, 2, width_ratios=[1, 1.4])
  limit = max(np.abs(drop).max(), 1e-6)
  im = ax_map.imshow(drop, cmap='RdBu_r', vmin=-limit, vmax=limit)
  fig.colorbar(im, ax=ax_map, label='drop of wˡ (baseline − occluded)')
  ax_map.set(xlabel='patch', ylabel='occluded patch', title='Drop of every patch\'s wˡ')
  ticks = range(0, m, max(1, m // 8))
  ax_map.set_xticks(ticks)
  ax_map.set_yticks(ticks)
  x = np.arange(m)
  ax_bar.bar(x - 0.2, own, width=0.4, color='C3', label='occluded patch itself')
  ax_bar.bar(x + 0.2, others, width=0.4, color='C0', label='mean of the other patches')
  ax_bar.axhline(0, color='black', linewidth=0.8)
  ax_bar.set_xticks(ticks)
  ax_bar.set(xlabel='occluded patch', ylabel='drop of wˡ', title='Own drop vs the others')
  top = max(own.max(), others.max())
  if top > 0:
    ax_bar.set_ylim(top=1.25 * top)  # leave room for the legend above the bars
  ax_bar.legend(loc='upper right')
  return save(fig, path)


def crucial_per_class(result: dict, path) -> str:
  """Bars per class: the share of wᵍ on the crucial patches against a uniform wᵍ's share
  (`analysis.crucial_mass`'s `per_class`)."""
  names = list(result['per_class'])
  mass = [100 * result['per_class'][c]['mass'] for c in names]
  uniform = [100 * result['per_class'][c]['uniform'] for c in names]
  fig = Figure(figsize=(1.2 * len(names) + 2, 3.8), layout='constrained')
  ax = fig.add_subplot()
  x = np.arange(len(names))
  ax.bar(x - 0.2, mass, width=0.4, color='C3', label='wᵍ mass on crucial patches')
  ax.bar(x + 0.2, uniform, width=0.4, color='C7', label='uniform share')
  ax.set_xticks(x, names, rotation=30, ha='right')
  ax.set(ylabel='% of wᵍ', title='Non-local attention on the crucial patches, per class')
  ax.set_ylim(0, 125)  # room for the legend above the bars
  ax.legend(fontsize=8, loc='upper right', ncols=2)
  return save(fig, path)


def crucial_over_training(series: Sequence[dict], path) -> str:
  """The tracked faces' share of wᵍ on the crucial patches and a uniform wᵍ's, step by step
  (`analysis.crucial_over_training`)."""
  steps = [s['step'] for s in series]
  fig = Figure(figsize=(6, 3.8), layout='constrained')
  ax = fig.add_subplot()
  ax.plot(steps, [100 * (s['mass'] or 0) for s in series], marker='.', color='C3',
          label='wᵍ mass on crucial patches')
  ax.plot(steps, [100 * (s['uniform'] or 0) for s in series], linestyle='--', color='C7',
          label='uniform share')
  ax.set(xlabel='training step', ylabel='% of wᵍ', title='Tracked faces over training')
  ax.legend(fontsize=8)
  return save(fig, path)


def run_figures(out, history, result, class_names, tracker, patch_boxes) -> None:
  """A finished run's figures in `out`: confusion matrix (Fig. 8–9), training curves, wᵍ over the
  tracked test faces (Fig. 10) and their wᵍ over training (Fig. 11–12)."""
  confusion_matrix(result['cm'], class_names, os.path.join(out, 'confusion_matrix.png'))
  training_curves(history, os.path.join(out, 'training_curves.png'))
  titles = [class_names[l] for l in tracker.batch['label'][:tracker.k]]
  attention_grid(tracker.batch['image'][:tracker.k], result['w_global'][:tracker.k],
                 os.path.join(out, 'global_weights.png'), patch_boxes=patch_boxes, titles=titles)
  if tracker.steps:
    attention_over_time(np.array(tracker.steps), np.stack(tracker.weights),
                        os.path.join(out, 'global_weights_over_training.png'))
