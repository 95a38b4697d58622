"""The evidence set's metrics, on hand-made inputs whose answers are worked out in the comments."""
import numpy as np
import pytest

from lnl_jax import analysis


# --- metrics ----------------------------------------------------------------------------------------

def test_normalised_crucial_measures_put_uniform_at_0_and_perfect_at_1():
  crucial = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], bool)
  uniform = analysis.crucial_mass(np.full((3, 4), 0.25), crucial)
  perfect = analysis.crucial_mass(np.array([[0.7, 0.3, 0, 0], [1, 0, 0, 0], [0.2, 0.3, 0.5, 0]]),
                                  crucial)
  for key in ('excess_normalised', 'top1_normalised', 'rank_normalised'):
    assert uniform[key] == pytest.approx(0, abs=1e-12), key
    assert perfect[key] == pytest.approx(1), key
  assert uniform['ci95_normalised'] == pytest.approx([0, 0], abs=1e-12)
  # The raw excess of the perfect wᵍ is 1 − k/M per face: (0.5 + 0.75 + 0.25) / 3.
  assert perfect['excess'] == pytest.approx(0.5)

  # Face 0: mass 0.8 against 0.5 -> 0.3 / 0.5 = 0.6; its crucial patches tie at ranks 1.5 (the best
  # possible, (k + 1) / 2) -> rank 1; they also tie for the top weight -> top-1 1.
  # Face 1: all mass off its one crucial patch -> (0 − 0.25) / 0.75 = −1/3; that patch ranks last
  # (4) against 2.5 random and 1 best -> (2.5 − 4) / (2.5 − 1) = −1; the top weight is shared by
  # three non-crucial patches -> top-1 0 -> (0 − 0.25) / 0.75 = −1/3.
  w = np.array([[0.4, 0.4, 0.1, 0.1], [0, 1 / 3, 1 / 3, 1 / 3]])
  r = analysis.crucial_mass(w, crucial[:2])
  assert r['excess_normalised'] == pytest.approx((0.6 - 1 / 3) / 2)
  assert r['rank_normalised'] == pytest.approx((1 - 1) / 2)
  assert r['top1_normalised'] == pytest.approx((1 - 1 / 3) / 2)
  half = 1.959964 * np.std([0.6, -1 / 3], ddof=1) / np.sqrt(2)
  assert r['ci95_normalised'] == pytest.approx([(0.6 - 1 / 3) / 2 - half, (0.6 - 1 / 3) / 2 + half],
                                               abs=1e-5)
  # Half the weight tied on one crucial and one non-crucial patch: top-1 is shared, 0.5 against
  # chance 0.5 -> 0 (the first-index argmax of top1_crucial would call it a hit).
  tied = analysis.crucial_mass(np.array([[0.5, 0, 0.5, 0]]), crucial[:1])
  assert tied['top1_normalised'] == pytest.approx(0) and tied['top1_crucial'] == 1
  assert set(analysis.crucial_mass(w, np.zeros((2, 4), bool))) >= {'excess_normalised',
                                                                    'rank_normalised'}


# A 14-px image cut into a 3×3 grid of 6-px patches 4 px apart (2 px overlap).
BOXES = [(y, x, y + 6, x + 6) for y in (0, 4, 8) for x in (0, 4, 8)]
# Per face, how its wˡ answers grey pixels: 'follows' falls with the grey share of each patch,
# 'opposes' rises with it, 'global' falls by 0.3 on every patch when any pixel is grey, 'blind'
# stays put.
FACES = ('follows', 'follows', 'opposes', 'global', 'blind')


def kinds_model(images):
  grey = np.all(images == analysis.GREY, axis=-1)
  share = np.stack([grey[:, t:b, l:r].mean((1, 2)) for t, l, b, r in BOXES], axis=1)  # (N, 9)
  w = np.full(share.shape, 0.5)
  for n, kind in enumerate(FACES):
    if kind == 'global':
      w[n] -= 0.3 * grey[n].any()
    elif kind != 'blind':
      w[n] -= (0.4 if kind == 'follows' else -0.4) * share[n]
  return dict(prediction=np.zeros(len(images), int), w_local=w)


def test_occlusion_counts_face_by_face_how_often_the_occluded_patch_falls():
  images = np.random.default_rng(0).integers(0, 256, (5, 14, 14, 3), dtype=np.uint8)
  images[images == analysis.GREY] = 127
  r = analysis.occlusion_analysis(kinds_model, images, np.zeros(5, int), BOXES)
  # The occluded patch's own wˡ falls on 'follows' (0.4) and 'global' (0.3) faces, rises on
  # 'opposes' (−0.4), stays on 'blind': 3 of 5 faces. It falls by more than the others' mean only
  # on 'follows' faces (the others fall by less than 0.4 there; on 'global' faces all fall alike).
  assert r['own_drop_rate'] == pytest.approx([0.6] * 9)
  assert r['own_drop_beyond_others_rate'] == pytest.approx([0.4] * 9)
  face = r['per_face']
  assert face['num_faces'] == 5
  assert face['own_drop_rate'] == pytest.approx(0.6)
  assert face['own_drop_beyond_others_rate'] == pytest.approx(0.4)
  assert face['own_drop'] == pytest.approx((0.4 + 0.4 - 0.4 + 0.3 + 0) / 5)
  # Others' fall on a 'follows' face: 0.4 × the share of patch j covered by patch i's box, averaged
  # over the 8 others and the 9 patches. Ordered pairs overlap 2 × (6 horizontal + 6 vertical
  # neighbour pairs × 12 px + 8 diagonal pairs × 4 px) = 352 px of 36-px patches.
  k = 352 / 36 / 9 / 8
  assert face['others_drop'] == pytest.approx((0.4 * k + 0.4 * k - 0.4 * k + 0.3 + 0) / 5)
  diffs = [0.4 - 0.4 * k, 0.4 - 0.4 * k, -(0.4 - 0.4 * k), 0.0, 0.0]
  assert face['own_minus_others'] == pytest.approx(np.mean(diffs))
  half = 1.959964 * np.std(diffs, ddof=1) / np.sqrt(5)
  assert face['ci95'] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], abs=1e-5)
  # The mean over faces hides the 'opposes' face: the per-patch mean fall is positive.
  assert r['own_drop'] == pytest.approx([0.14] * 9)
