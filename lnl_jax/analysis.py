"""The paper's attention analyses (Sec. IV-C, IV-D) of a trained workdir; what it saw by eye, measured.

  python -m lnl_jax.analysis --workdir=runs/raf [--what=attention,occlusion,crucial,confusion]
      [--num_images=64] [--grid=16] [--fill=grey|noise] [--checkpoint=latest|best|STEP]
      [--data_root=DIR]

Loads the checkpoint --checkpoint names (default: the newest) and writes under WORKDIR/analysis/:
  attention   global_weights_grid.png — Fig. 10: wᵍ as an n×n heat-map over test faces.
  occlusion   occlusion.png, occlusion.json — Fig. 13: each patch in turn is covered by a grey
              (or noise) box over its pixel box, on --num_images test faces (taken from the
              classes in turn: `Records.limited`); every patch's mean wˡ and the accuracy are
              recorded. The paper's claim (the occluded patch's wˡ drops, the others' stay) is
              measured as the drop of its own wˡ against the mean drop of the others.
  crucial     crucial.json, crucial_per_class.png, crucial_over_training.png — synthetic faces
              only (they know which patches hold the expression): the share of wᵍ's mass on the
              crucial patches against the share a uniform wᵍ would give, per class and over
              training (the faces tracked in attention_track.npz), and the crucial patches' rank.
  confusion   confusion_matrix.png, per_class.json — Fig. 8–9 on the whole test split.

The work is done by functions of arrays (`crucial_mass`, `occlusion_analysis`, ...); the CLI only
loads the model and the data and writes the files.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags, logging
from scipy import stats

from lnl_jax import checkpoints, cli, io, plots, train
from lnl_jax.checkpoints import load_trained
from lnl_jax.data import pipeline
from lnl_jax.errors import ConfigError
from lnl_jax.inference import Predictor
from lnl_jax.steps import Parallel

GREY = 128  # uint8 grey of an occluder: 0 after normalisation to [-1, 1]
Z_95 = 1.959963984540054  # the normal quantile of 0.975: half-width of a 95 % interval
# Smallest effects the verdicts count as the paper's claims holding (below them a consistent but
# negligible effect would 'confirm' a claim): 2 points of wᵍ's mass above the uniform share, and a
# fall of 0.01 of the occluded patch's own wˡ ∈ (0, 1) (the paper's Fig. 13 shows falls of ~0.4).
MIN_EXCESS_MASS = 0.02
MIN_OWN_DROP = 0.01
VERBS = {'holds': 'confirmed', 'refuted': 'refuted', 'not shown': 'not shown'}


def claim_outcome(interval, size: float, minimum: float) -> str:
  """A claim's outcome from the 95 % interval of its effect and the effect's size: 'holds' when the
  interval lies above 0 and the size reaches `minimum`; 'refuted' when the interval lies below 0
  (the opposite effect); 'not shown' otherwise (the interval includes 0, or the effect is too small
  to count)."""
  lo, hi = interval
  if lo > 0 and size >= minimum:
    return 'holds'
  return 'refuted' if hi < 0 else 'not shown'


def majority_share(labels) -> float:
  """The share of the most common class among `labels` (0 for none): what a model that always
  answers it scores on them (1/num_classes on balanced classes)."""
  labels = np.asarray(labels, np.int64)
  return float(np.bincount(labels).max() / labels.size) if labels.size else 0.0


def at_chance(accuracy: float, labels) -> bool:
  """Whether a test accuracy (%) over faces with these `labels` is no better than a model that
  always answers the most common of them: at most `majority_share` plus Z_95 standard errors of
  such a guesser's accuracy over as many faces, a one-sided 97.5 % bound (True for no faces)."""
  n, p = len(labels), majority_share(labels)
  return not n or accuracy / 100.0 <= p + Z_95 * np.sqrt(p * (1 - p) / n)


def _scope(claim: str, outcome: str, accuracy: float, labels, where: str) -> str:
  """How a verdict on `claim` ends: its outcome for this one model (measured `where`), or, for a
  model at chance on those faces (`at_chance`, when their `labels` are given), that the model says
  nothing about it."""
  if labels is not None and at_chance(accuracy, labels):
    return (f'this model is at chance ({accuracy:.1f}% over {len(labels)} faces, the most common '
            f'class {100 * majority_share(labels):.1f}%): it has not learned the expressions, so '
            f'it says nothing about the paper\'s claim that {claim}.')
  return (f'the paper\'s claim that {claim} is {VERBS[outcome]} for this model{where} (one trained '
          'model; across seeds: launch.evidence).')


ApplyFn = Callable[[np.ndarray], dict]  # uint8 images (N, S, S, 3) -> prediction, w_global, w_local
ANALYSES = ('attention', 'occlusion', 'crucial', 'confusion')

FLAGS = flags.FLAGS
cli.uses_cache_flags()
cli.define_workdir_flags()
flags.DEFINE_list('what', None, f'Analyses to run, from {", ".join(ANALYSES)} (default: all that '
                  'apply; crucial only on synthetic faces).')
flags.DEFINE_integer('num_images', 64, 'Test faces occluded patch by patch (occlusion).')
flags.DEFINE_integer('grid', 16, 'Test faces in the wᵍ heat-map grid (attention).')
flags.DEFINE_enum('fill', 'grey', ['grey', 'noise'], 'What covers an occluded patch.')
cli.define_data_root_flag()


# --- crucial patches (synthetic faces) ------------------------------------------------------------

def crucial_mass(w_global, crucial, labels=None, class_names: Sequence[str] | None = None) -> dict:
  """How much of wᵍ falls on the crucial patches, against what a uniform wᵍ would put there.

  Args:
    w_global: (N, M) non-local weights of N faces (each row is renormalised to sum to 1).
    crucial: (N, M) bool, the patches holding expression cues.
    labels, class_names: optional (N,) classes, for the per-class breakdown.

  Faces whose patches are all crucial or none are left out: for them every wᵍ gives the uniform share.
  Returns, over the other faces (means of per-face values):
    mass: share of wᵍ on crucial patches; uniform: the uniform share k/M; excess = mass − uniform
    with its 95 % normal confidence interval (ci95); top1_crucial: how often the highest-weighted
    patch is crucial (top1_uniform: chance level k/M); mean_rank: mean rank of the crucial patches
    (1 = highest wᵍ, ties share their mean rank) against rank_uniform = (M + 1) / 2; num_faces.
    And the same three measures on one scale where 0 is a uniform wᵍ (or a random order) and 1 is
    a wᵍ with all its mass on, and every crucial patch ranked above every other (`_normalised`):
    excess_normalised = (mass − uniform) / (1 − uniform) with its ci95_normalised,
    top1_normalised = (top-1 rate − k/M) / (1 − k/M) (tied highest weights share the top-1 place),
    rank_normalised = (rank_uniform − mean rank) / (rank_uniform − (k + 1) / 2); each per face, then
    averaged. On the synthetic faces at 144 px with M = 16 more than half the patches are crucial,
    so a uniform wᵍ already puts more than half its mass there and the raw excess has little room
    above it: the normalised measures make 'uniform' 0 and 'perfect' 1 whatever that share is.
    The crucial rule itself is kept: every patch it marks holds expression pixels, so a narrower
    rule would count attention to real cues as a miss.
  """
  w = np.asarray(w_global, np.float64)
  crucial = np.asarray(crucial, bool)
  if w.ndim != 2 or crucial.shape != w.shape:
    raise ValueError(f'w_global {w.shape} and crucial {crucial.shape} must both be (N, M).')
  m = w.shape[1]
  k = crucial.sum(1)
  keep = (k > 0) & (k < m)
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (len(w),):
      raise ValueError(f'labels has shape {labels.shape}; expected ({len(w)},).')
  result = _mass_stats(w[keep], crucial[keep], k[keep], m)
  result['faces_left_out'] = int((~keep).sum())
  if labels is not None:
    names = class_names or [str(c) for c in range(int(labels.max()) + 1)]
    result['per_class'] = {
        name: _mass_stats(w[keep & (labels == c)], crucial[keep & (labels == c)],
                          k[keep & (labels == c)], m)
        for c, name in enumerate(names) if np.any(keep & (labels == c))}
  return result


def _mass_stats(w, crucial, k, m) -> dict:
  n = len(w)
  if n == 0:
    return dict(num_faces=0, mass=None, uniform=None, excess=None, ci95=None, top1_crucial=None,
                top1_uniform=None, mean_rank=None, rank_uniform=(m + 1) / 2,
                excess_normalised=None, ci95_normalised=None, top1_normalised=None,
                rank_normalised=None)
  w = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
  mass = (w * crucial).sum(1)
  uniform = k / m
  excess = mass - uniform
  half = Z_95 * excess.std(ddof=1) / np.sqrt(n) if n > 1 else float('inf')
  ranks = stats.rankdata(-w, axis=1)  # 1 = highest weight; ties get their mean rank
  top1 = crucial[np.arange(n), np.argmax(w, axis=1)]
  mean_rank = (ranks * crucial).sum(1) / k
  return dict(num_faces=int(n), mass=float(mass.mean()), uniform=float(uniform.mean()),
              excess=float(excess.mean()),
              ci95=[float(excess.mean() - half), float(excess.mean() + half)],
              top1_crucial=float(top1.mean()), top1_uniform=float(uniform.mean()),
              mean_rank=float(mean_rank.mean()), rank_uniform=(m + 1) / 2,
              **_normalised_stats(w, crucial, k, m, mass, mean_rank))


def _normalised_stats(w, crucial, k, m, mass, mean_rank) -> dict:
  """`crucial_mass`'s measures rescaled per face so that uniform is 0 and perfect is 1."""
  n = len(w)
  uniform = k / m
  excess = (mass - uniform) / (1 - uniform)
  half = Z_95 * excess.std(ddof=1) / np.sqrt(n) if n > 1 else float('inf')
  highest = w >= w.max(1, keepdims=True)  # ties share the top-1 place
  top1 = (highest & crucial).sum(1) / highest.sum(1)
  rank_uniform, rank_best = (m + 1) / 2, (k + 1) / 2
  return dict(excess_normalised=float(excess.mean()),
              ci95_normalised=[float(excess.mean() - half), float(excess.mean() + half)],
              top1_normalised=float(((top1 - uniform) / (1 - uniform)).mean()),
              rank_normalised=float(((rank_uniform - mean_rank) / (rank_uniform - rank_best)).mean()))


def crucial_verdict(result: dict, attention: str = 'both', *, accuracy: float = 0.0,
                    labels=None) -> str:
  """The plain-language verdict on the paper's claim, from `crucial_mass`'s result.

  `claim_outcome` of the excess mass's 95 % interval over faces, with MIN_EXCESS_MASS: an outcome
  for this one model. Given the `labels` of the faces its `accuracy` (%) was measured on, a model
  at chance gets no outcome (`at_chance`).
  """
  if attention in ('none', 'local'):
    return (f'This model (model.attention={attention}) has no non-local attention: wᵍ is uniform by '
            'construction, so the claim cannot be tested on it.')
  if not result['num_faces']:
    return 'No face has both crucial and non-crucial patches; nothing to measure.'
  lo, hi = result['ci95']
  outcome = claim_outcome((lo, hi), result['excess'], MIN_EXCESS_MASS)
  return (f'wᵍ puts {100 * result["mass"]:.1f}% of its mass on crucial patches against '
          f'{100 * result["uniform"]:.1f}% uniform (excess {100 * result["excess"]:+.1f} points, 95% '
          f'CI {100 * lo:+.1f} to {100 * hi:+.1f}; mean rank of crucial patches '
          f'{result["mean_rank"]:.2f} against {result["rank_uniform"]:.2f}, over '
          f'{result["num_faces"]} faces): ' +
          _scope('non-local attention finds crucial regions', outcome, accuracy, labels,
                 ' on synthetic faces'))


def crucial_over_training(steps, w_global, crucial) -> list[dict]:
  """`crucial_mass` of tracked faces at every logged step: w_global (T, K, M), crucial (K, M)."""
  out = []
  for step, w in zip(np.asarray(steps), np.asarray(w_global)):
    r = crucial_mass(w, crucial)
    out.append(dict(step=int(step), mass=r['mass'], uniform=r['uniform'], mean_rank=r['mean_rank']))
  return out


# --- occlusion (Fig. 13) --------------------------------------------------------------------------

def occlude(images: np.ndarray, box, fill: str = 'grey', rng: np.random.Generator | None = None):
  """A copy of uint8 `images` (N, S, S, 3) with the (top, left, bottom, right) box grey or noise."""
  top, left, bottom, right = (int(v) for v in box)
  out = np.array(images, copy=True)
  if fill == 'grey':
    out[:, top:bottom, left:right] = GREY
  elif fill == 'noise':
    rng = rng or np.random.default_rng(0)
    region = out[:, top:bottom, left:right]
    out[:, top:bottom, left:right] = rng.integers(0, 256, region.shape, dtype=np.uint8)
  else:
    raise ValueError(f'fill={fill!r}; use grey or noise.')
  return out


def _overlaps(a, b) -> bool:
  return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def occlusion_analysis(apply_fn: ApplyFn, images, labels, boxes, fill: str = 'grey',
                       seed: int = 0) -> dict:
  """Fig. 13: patch i occluded in turn on every image; every patch's mean wˡ and the accuracy.

  Args:
    apply_fn: uint8 images (N, S, S, 3) -> dict with 'prediction' (N,) and 'w_local' (N, M)
      (and optionally 'w_global' (N, M)).
    images: (N, S, S, 3) uint8; labels: (N,) true classes.
    boxes: M (top, left, bottom, right) pixel boxes of the patches in the image.
    fill: 'grey' (uint8 128) or 'noise' (uniform, seeded by `seed`).

  Returns a dict of lists: baseline_w_local (M,), baseline_accuracy, occluded_w_local (M, M) (row i:
  mean wˡ of every patch with patch i occluded), accuracy (M,) under occlusion of patch i, own_drop
  (M,) (the occluded patch's own fall of wˡ), others_drop (M,) (mean fall of the other patches),
  neighbour_drop / far_drop (M,) (mean fall of the patches whose boxes overlap patch i's / do not),
  own_drop_largest (how many patches' own drop exceeds the others' mean drop), and, if apply_fn
  gives it, baseline_w_global and occluded_w_global.
  Face by face (the means above can hide a drop on a few faces and a rise on most):
  own_drop_rate (M,), the share of faces on which the occluded patch's own wˡ falls;
  own_drop_beyond_others_rate (M,), the share on which it falls by more than the other patches'
  mean fall on that face; and `per_face`, the same over every (face, patch): own_drop_rate,
  own_drop_beyond_others_rate, own_drop and others_drop (mean falls), own_minus_others (their
  difference, averaged over patches per face, then over faces) with its 95 % normal interval over
  faces (ci95), num_faces.
  """
  images = np.asarray(images)
  labels = np.asarray(labels)
  boxes = [tuple(int(v) for v in b) for b in boxes]
  m = len(boxes)
  rng = np.random.default_rng(seed)
  base = apply_fn(images)
  base_faces = np.asarray(base['w_local'], np.float64)  # (N, M)
  base_w = base_faces.mean(0)
  if base_w.shape != (m,):
    raise ValueError(f'apply_fn gives w_local for {base_w.shape} patches; expected {m}, one per box.')
  occluded_w, occluded_g, accuracy = [], [], []
  face_drop = []  # face_drop[i][n, j]: fall of patch j's wˡ on face n with patch i occluded
  # One pass over the faces per patch: minutes of the full model on a CPU.
  for box in train.progress(boxes, desc='occluding patches', unit='patch', leave=False):
    out = apply_fn(occlude(images, box, fill, rng))
    face_drop.append(base_faces - np.asarray(out['w_local'], np.float64))
    occluded_w.append(np.asarray(out['w_local'], np.float64).mean(0))
    if 'w_global' in out:
      occluded_g.append(np.asarray(out['w_global'], np.float64).mean(0))
    accuracy.append(100.0 * float(np.mean(np.asarray(out['prediction']) == labels)))
  occluded_w = np.stack(occluded_w)
  drop = base_w[None, :] - occluded_w  # drop[i, j]: fall of patch j's wˡ with patch i occluded
  own = np.diag(drop)
  others = (drop.sum(1) - own) / max(m - 1, 1)
  near = np.array([[i != j and _overlaps(a, b) for j, b in enumerate(boxes)]
                   for i, a in enumerate(boxes)])
  far = ~near & ~np.eye(m, dtype=bool)
  mean_where = lambda mask: [float(drop[i][mask[i]].mean()) if mask[i].any() else None
                             for i in range(m)]
  result = dict(
      fill=fill, num_images=int(len(images)), boxes=[list(b) for b in boxes],
      baseline_w_local=base_w.tolist(),
      baseline_accuracy=100.0 * float(np.mean(np.asarray(base['prediction']) == labels)),
      occluded_w_local=occluded_w.tolist(), accuracy=accuracy, own_drop=own.tolist(),
      others_drop=others.tolist(), neighbour_drop=mean_where(near), far_drop=mean_where(far),
      own_drop_largest=int(np.sum(own > others)), **_per_face_drops(np.stack(face_drop)))
  if 'w_global' in base and occluded_g:
    result['baseline_w_global'] = np.asarray(base['w_global'], np.float64).mean(0).tolist()
    result['occluded_w_global'] = np.stack(occluded_g).tolist()
  return result


def _per_face_drops(face_drop: np.ndarray) -> dict:
  """`occlusion_analysis`'s face-by-face keys from face_drop (M occluded, N faces, M patches)."""
  m, n = face_drop.shape[0], face_drop.shape[1]
  own = np.stack([face_drop[i, :, i] for i in range(m)], axis=1)  # (N, M): patch i occluded
  others = (face_drop.sum(2).T - own) / max(m - 1, 1)  # (N, M): mean fall of the rest
  diff = (own - others).mean(1)  # (N,)
  half = Z_95 * diff.std(ddof=1) / np.sqrt(n) if n > 1 else float('inf')
  return dict(
      own_drop_rate=(own > 0).mean(0).tolist(),
      own_drop_beyond_others_rate=(own > others).mean(0).tolist(),
      per_face=dict(num_faces=int(n), own_drop_rate=float((own > 0).mean()),
                    own_drop_beyond_others_rate=float((own > others).mean()),
                    own_drop=float(own.mean()), others_drop=float(others.mean()),
                    own_minus_others=float(diff.mean()),
                    ci95=[float(diff.mean() - half), float(diff.mean() + half)]))


def occlusion_verdict(result: dict, attention: str = 'both', *, labels=None) -> str:
  """The plain-language verdict on Fig. 13's claim, from `occlusion_analysis`'s result.

  `claim_outcome` of the 95 % interval, over the M patches, of (own drop − mean drop of the
  others), with the mean own drop against MIN_OWN_DROP: an outcome for this one model. Given the
  `labels` of the occluded faces, a model at chance on them unoccluded gets no outcome
  (`at_chance`).
  """
  own, others = np.array(result['own_drop']), np.array(result['others_drop'])
  acc = (f'accuracy {result["baseline_accuracy"]:.1f}% unoccluded, '
         f'{np.mean(result["accuracy"]):.1f}% on average with one patch occluded')
  if attention in ('none', 'nonlocal'):
    return (f'This model (model.attention={attention}) has no local attention: wˡ = 1 by '
            f'construction; {acc}.')
  m = len(own)
  d = own - others
  # t, not the normal quantile: an interval over M patches (16 here), not hundreds of faces.
  half = stats.t.ppf(0.975, m - 1) * d.std(ddof=1) / np.sqrt(m) if m > 1 else float('inf')
  outcome = claim_outcome((d.mean() - half, d.mean() + half), own.mean(), MIN_OWN_DROP)
  return (f'Occluding a patch lowers its own wˡ by {own.mean():.3g} on average against '
          f'{others.mean():.3g} for the other patches ({result["own_drop_largest"]} of {m} patches '
          f'drop most themselves; {acc}): ' +
          _scope('the local attention down-weights an occluded patch', outcome,
                 result['baseline_accuracy'], labels, ''))


# --- a workdir's test faces ----------------------------------------------------------------------------

def load_images(records, image_size: int, batch_size: int, limit: int):
  """(images, labels, record indices) of the decodable ones among `records.limited(limit)` (every
  class represented), as fed to the model."""
  sub = records.limited(limit)
  images, labels, index = [], [], []
  for batch in pipeline.eval_batches(sub, batch_size=batch_size, image_size=image_size):
    keep = batch['mask']
    images.append(batch['image'][keep])
    labels.append(batch['label'][keep])
    index.append(batch['index'][keep])
  return np.concatenate(images), np.concatenate(labels), np.concatenate(index)


def analyze(workdir: str, what: Sequence[str] = ANALYSES, num_images: int = 64, grid: int = 16,
            fill: str = 'grey', checkpoint: str = 'latest', data_root: str | None = None,
            data_cache: str | None = None) -> dict:
  """Runs the analyses `what` on `workdir`; returns {analysis: path of its main output}.

  `data_root` replaces the dataset folder recorded in the workdir's config.json (data moved);
  synthetic faces are read from `data_cache` when kept there (`Trained.test_split`).
  """
  unknown = set(what) - set(ANALYSES)
  if unknown:
    raise ConfigError(f'--what={",".join(what)}: {", ".join(sorted(unknown))} unknown; choose from '
                      f'{", ".join(ANALYSES)}.')
  config = checkpoints.load_config(workdir)  # checked before anything is restored
  if 'crucial' in what and config.data.name != 'synthetic':
    raise ConfigError(f'--what=crucial needs synthetic faces (they know their crucial patches); '
                      f'{workdir} was trained on {config.data.name!r}.')
  run = load_trained(workdir, checkpoint)
  test = run.test_split(data_root, data_cache)
  model, step = run.model, run.step
  out_dir = os.path.join(workdir, 'analysis')
  batch_size, size = config.train.batch_size, config.data.image_size
  boxes = model.geometry.boxes()
  # One compiled program for every analysis below, data-parallel over every device.
  apply_fn = Predictor(model, run.params, batch_size, Parallel())
  written = {}
  logging.info('analysing %s at step %d: %s', workdir, step, ', '.join(what))

  if 'attention' in what:
    images, labels, _ = load_images(test, size, batch_size, grid)
    out = apply_fn(images)
    names = test.class_names
    titles = [f'{names[t]} → {names[p]}' for t, p in zip(labels, out['prediction'])]
    written['attention'] = plots.attention_grid(
        images, out['w_global'], os.path.join(out_dir, 'global_weights_grid.png'), patch_boxes=boxes,
        titles=titles)

  if 'occlusion' in what:
    images, labels, _ = load_images(test, size, batch_size, num_images)
    result = occlusion_analysis(apply_fn, images, labels, boxes, fill=fill, seed=config.seed)
    result.update(step=step, verdict=occlusion_verdict(result, config.model.attention,
                                                       labels=labels))
    plots.local_weights_occlusion(np.array(result['occluded_w_local']),
                                  np.array(result['baseline_w_local']),
                                  os.path.join(out_dir, 'occlusion.png'))
    io.write_json(os.path.join(out_dir, 'occlusion.json'), result)
    written['occlusion'] = os.path.join(out_dir, 'occlusion.json')
    logging.info('%s', result['verdict'])

  if 'crucial' in what or 'confusion' in what:
    evaluation = train.evaluate(apply_fn.params, test, eval_step=apply_fn.eval_step,
                                parallel=apply_fn.parallel, config=config)

  if 'confusion' in what:
    cm = evaluation['cm']
    plots.confusion_matrix(cm, test.class_names, os.path.join(out_dir, 'confusion_matrix.png'),
                           title=f'Step {step}')
    pairs = [(int(cm[i, j]), test.class_names[i], test.class_names[j])
             for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j]]
    io.write_json(os.path.join(out_dir, 'per_class.json'), dict(
        step=step, accuracy=evaluation['accuracy'], balanced_accuracy=evaluation['balanced_accuracy'],
        per_class_accuracy=dict(zip(test.class_names, evaluation['per_class'])),
        most_confused=[dict(true=t, predicted=p, count=n)
                       for n, t, p in sorted(pairs, reverse=True)[:10]],
        confusion_matrix=cm.tolist(), class_names=list(test.class_names)))
    written['confusion'] = os.path.join(out_dir, 'per_class.json')

  if 'crucial' in what:
    if evaluation['bad_images']:
      raise ConfigError('undecodable test images: wᵍ rows no longer line up with the crucial flags.')
    result = crucial_mass(evaluation['w_global'], test.crucial, test.labels, test.class_names)
    result.update(step=step, attention=config.model.attention,
                  verdict=crucial_verdict(result, config.model.attention,
                                          accuracy=evaluation['accuracy'], labels=test.labels))
    if result.get('per_class'):
      plots.crucial_per_class(result, os.path.join(out_dir, 'crucial_per_class.png'))
    track_path = os.path.join(workdir, 'attention_track.npz')
    if os.path.exists(track_path):
      with np.load(track_path) as track:
        k = track['w_global'].shape[1]
        if np.array_equal(track['images'], test.images[:k]):
          result['over_training'] = crucial_over_training(track['steps'], track['w_global'],
                                                          test.crucial[:k])
          result['over_training_faces'] = int(k)
          plots.crucial_over_training(result['over_training'],
                                      os.path.join(out_dir, 'crucial_over_training.png'))
        else:
          logging.warning('attention_track.npz holds other faces than the test split\'s first %d; '
                          'no over-training series.', k)
    io.write_json(os.path.join(out_dir, 'crucial.json'), result)
    written['crucial'] = os.path.join(out_dir, 'crucial.json')
    logging.info('%s', result['verdict'])
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup_process()

  def run():
    what = FLAGS.what
    if what is None:
      synthetic = checkpoints.load_config(FLAGS.workdir).data.name == 'synthetic'
      what = [a for a in ANALYSES if a != 'crucial' or synthetic]
    return analyze(FLAGS.workdir, what, FLAGS.num_images, FLAGS.grid, FLAGS.fill, FLAGS.checkpoint,
                   FLAGS.data_root, cli.data_cache_dir(FLAGS.data_cache))

  written = cli.run_or_exit(run)
  for name, path in written.items():
    print(f'{name}: {path}')
  for name in ('occlusion', 'crucial'):
    if name in written:
      with open(written[name]) as f:
        print(json.load(f)['verdict'])


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  cli.run(main)
