"""Figures: each writes a readable PNG; the wᵍ overlay paints the right colour in the right place."""
import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from lnl_jax import geometry
from lnl_jax import plots

GREY = 128
# 'jet' runs from dark blue (0, 0, 0.5) to dark red (0.5, 0, 0); blended 50/50 over grey 128:
LOWEST = (64, 64, 128)
HIGHEST = (128, 64, 64)


def _assert_png(path, min_side=150):
  with Image.open(path) as im:
    assert im.format == 'PNG'
    im.load()
    assert min(im.size) >= min_side, im.size
    assert np.asarray(im.convert('L')).std() > 5  # not blank


def _weights(rng, k, m):
  w = rng.random((k, m)) + 0.1
  return w / w.sum(axis=1, keepdims=True)


@pytest.mark.parametrize('m', [4, 16])
def test_every_figure_writes_a_png(tmp_path, m):
  rng = np.random.default_rng(m)
  faces = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
  boxes = geometry.patch_geometry(144, m, 16).boxes()
  out = [
      plots.confusion_matrix(rng.integers(0, 50, (7, 7)), list('ABCDEFG'), tmp_path / 'cm.png'),
      plots.training_curves(
          [{'epoch': e, 'train_loss': 2 / (e + 1), 'train_accuracy': 0.5 + e / 50,
            'test_accuracy': 0.45 + e / 60, 'learning_rate': 3e-4 * 0.95**e} for e in range(12)],
          tmp_path / 'curves.png'),
      plots.attention_grid(faces, _weights(rng, 3, m), tmp_path / 'grid_boxes.png',
                           patch_boxes=boxes, titles=['a', 'b', 'c']),
      plots.attention_grid(faces, _weights(rng, 3, m), tmp_path / 'grid.png', cols=2),
      plots.attention_over_time(np.arange(0, 500, 50), _weights(rng, 10, m).reshape(10, 1, m)
                                .repeat(2, axis=1), tmp_path / 'time.png', labels=['x', 'y']),
      plots.attention_over_time(np.arange(10), _weights(rng, 10, m), tmp_path / 'time1.png'),
      plots.local_weights_occlusion(rng.random((m, m)), rng.random(m), tmp_path / 'occ.png'),
  ]
  for path in out:
    _assert_png(path)


def test_outputs_go_to_new_folders_and_return_the_path(tmp_path):
  path = tmp_path / 'a' / 'b' / 'cm.png'
  assert plots.confusion_matrix(np.eye(2) * 3, ['x', 'y'], path) == str(path)
  assert path.stat().st_size > 0


def test_training_curves_with_some_keys_missing(tmp_path):
  history = [{'epoch': 1, 'train_loss': 1.0}, {'epoch': 2, 'test_accuracy': 0.5}]
  _assert_png(plots.training_curves(history, tmp_path / 'c.png'))


def test_overlay_is_reddest_on_the_highest_weight_patch():
  g = geometry.patch_geometry(144, 16, 16)  # 48-px patches, stride 32
  weights = np.full(16, 1 / 16)
  weights[5], weights[10] = 0.2, 0.01  # patch 5: row 1, col 1; patch 10: row 2, col 2
  image = np.full((144, 144, 3), GREY, np.uint8)
  out = plots.attention_overlay(image, weights, g.boxes()).astype(int)
  redness = out[..., 0] - out[..., 2]
  # Centres of the two patches: patch 5 spans [32, 80), patch 10 spans [64, 112).
  assert redness[50:62, 50:62].min() > redness[82:94, 82:94].max()
  np.testing.assert_array_equal(out[56, 56], HIGHEST)  # the centre of patch 5 is covered by it alone
  np.testing.assert_array_equal(out[88, 88], LOWEST)


def test_overlay_averages_overlaps_and_rescales_boxes():
  g = geometry.patch_geometry(144, 4, 16)  # two 80-px patches a side, origins 0 and 64
  weights = np.array([1.0, 0.0, 0.0, 0.0])
  image = np.full((72, 72, 3), GREY, np.uint8)  # half the size the boxes were laid out for
  out = plots.attention_overlay(image, weights, g.boxes())
  np.testing.assert_array_equal(out[5, 5], HIGHEST)  # patch 0 alone
  np.testing.assert_array_equal(out[5, 60], LOWEST)  # patch 1 alone
  # Overlap of patches 0 and 1 (columns 64..80 at 144 px, 32..40 at 72 px): heat (1 + 0) / 2.
  expected = np.rint(0.5 * GREY + 0.5 * 255 * np.array(colormaps['jet'](0.5)[:3]))
  np.testing.assert_array_equal(out[5, 36], expected)


def test_overlay_without_boxes_stretches_the_grid_and_leaves_uncovered_pixels():
  image = np.full((8, 8, 3), GREY, np.uint8)
  out = plots.attention_overlay(image, [0.1, 0.2, 0.3, 0.4])
  np.testing.assert_array_equal(out[:4, :4].reshape(-1, 3), np.tile(LOWEST, (16, 1)))
  np.testing.assert_array_equal(out[4:, 4:].reshape(-1, 3), np.tile(HIGHEST, (16, 1)))
  out = plots.attention_overlay(image, [1.0, 0.0, 0.0, 0.0], [(0, 0, 2, 2), (0, 6, 2, 8),
                                                               (6, 0, 8, 2), (6, 6, 8, 8)])
  np.testing.assert_array_equal(out[3:5, 3:5], image[3:5, 3:5])  # no box covers the middle


def test_uniform_weights_paint_the_middle_colour():
  image = np.full((8, 8, 3), GREY, np.uint8)
  out = plots.attention_overlay(image, np.full(4, 0.25))
  expected = np.rint(0.5 * GREY + 0.5 * 255 * np.array(colormaps['jet'](0.5)[:3]))
  np.testing.assert_array_equal(out[0, 0], expected)


def test_bad_shapes_raise_clear_errors(tmp_path):
  p = tmp_path / 'x.png'
  faces = np.zeros((2, 16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match='perfect square'):
    plots.attention_grid(faces, np.ones((2, 5)), p)
  with pytest.raises(ValueError, match=r'expected \(2, M\)'):
    plots.attention_grid(faces, np.ones((3, 4)), p)
  with pytest.raises(ValueError, match='patch_boxes'):
    plots.attention_grid(faces, np.ones((2, 4)), p, patch_boxes=[(0, 0, 4, 4)])
  with pytest.raises(ValueError, match='titles'):
    plots.attention_grid(faces, np.ones((2, 4)), p, titles=['only one'])
  with pytest.raises(ValueError, match='perfect square'):
    plots.attention_over_time(np.arange(3), np.ones((3, 2, 6)), p)
  with pytest.raises(ValueError, match='do not match'):
    plots.attention_over_time(np.arange(4), np.ones((3, 4)), p)
  with pytest.raises(ValueError, match='do not match'):
    plots.local_weights_occlusion(np.ones((4, 4)), np.ones(9), p)
  with pytest.raises(ValueError, match='perfect square'):
    plots.local_weights_occlusion(np.ones((5, 5)), np.ones(5), p)
  with pytest.raises(ValueError, match=r'expected \(3, 3\)'):
    plots.confusion_matrix(np.ones((2, 2)), ['a', 'b', 'c'], p)
  with pytest.raises(ValueError, match='non-negative'):
    plots.confusion_matrix(np.array([[3, -1], [0, 2]]), ['a', 'b'], p)
  with pytest.raises(ValueError, match='perfect square'):
    plots.attention_grid(faces, np.ones((2, 0)), p)
  with pytest.raises(ValueError, match=r'floats in \[0, 1\]'):
    plots.attention_grid(faces.astype(np.float32) + 200, np.ones((2, 4)), p)
  with pytest.raises(ValueError, match='epoch'):
    plots.training_curves([{'train_loss': 1.0}], p)
  assert not p.exists()


def test_overlay_without_boxes_stretches_the_grid_over_a_non_square_face():
  """Without boxes the 2×2 grid covers an 8×12 face as four 4×6 cells: the highest weight, bottom
  right, paints rows 4..7 and columns 6..11."""
  image = np.full((8, 12, 3), GREY, np.uint8)
  out = plots.attention_overlay(image, [0.1, 0.2, 0.3, 0.4])
  np.testing.assert_array_equal(out[4:, 6:].reshape(-1, 3), np.tile(HIGHEST, (24, 1)))
  np.testing.assert_array_equal(out[:4, :6].reshape(-1, 3), np.tile(LOWEST, (24, 1)))


def test_overlay_colours_follow_the_given_range():
  """With vmin and vmax given, weights are coloured on that range, not on this face's own: equal
  weights halfway through it paint the middle colour, weights at its ends the end colours."""
  image = np.full((8, 8, 3), GREY, np.uint8)
  middle = np.rint(0.5 * GREY + 0.5 * 255 * np.array(colormaps['jet'](0.5)[:3]))
  out = plots.attention_overlay(image, np.full(4, 0.5), vmin=0.0, vmax=1.0)
  np.testing.assert_array_equal(out.reshape(-1, 3), np.tile(middle, (64, 1)))
  out = plots.attention_overlay(image, [0.0, 0.5, 0.5, 1.0], vmin=0.0, vmax=1.0)
  np.testing.assert_array_equal(out[0, 0], LOWEST)
  np.testing.assert_array_equal(out[7, 7], HIGHEST)


def test_faces_may_be_grey_or_floats_in_0_1():
  """Grey faces (K, H, W) or (K, H, W, 1) are drawn as RGB, and float faces in [0, 1] are scaled
  to 0..255 (0.5 is grey 128), not cut to 0 or 1."""
  as_uint8 = plots._as_uint8_images  # pylint: disable=protected-access
  for grey in (np.full((2, 4, 4), 0.5), np.full((2, 4, 4, 1), 0.5)):
    np.testing.assert_array_equal(as_uint8(grey), np.full((2, 4, 4, 3), 128, np.uint8))
  np.testing.assert_array_equal(as_uint8(np.full((1, 2, 2, 3), 1.0)), np.full((1, 2, 2, 3), 255))
