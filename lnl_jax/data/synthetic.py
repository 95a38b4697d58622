"""Procedural synthetic faces of the 7 basic expressions, with the patches that hold the cues.

The embedded default dataset: it needs no download, and unlike a real one it says where the
expression is. Every face is drawn with PIL in a canonical unit square (x right, y down), then
posed (rotation ±10°, scale ±8%, translation ±6% of the side), drawn at twice the size and box-
downsampled for anti-aliasing, lit by a random gradient and given gaussian noise.

Only the *shape* of the eyes, brows and mouth depends on the class (surprise: raised arched brows,
wide eyes, open O mouth; fear: raised straight brows, wide eyes, stretched mouth; disgust: lowered
asymmetric brows, nose-bridge wrinkles, raised upper lip; happiness: smiling eyes and mouth;
sadness: inner-raised brows, down-turned mouth; anger: lowered V brows, pressed lips; neutral).
Each face shows its class at a random intensity (45–100 %) with per-part jitter, so classes
overlap a little. Face outline, hair, ears, nose, neck, clothes, background, lighting and occluders are
drawn from the same distribution for every class: they are distractors.

The expressive parts are clipped to three class-independent canonical regions (`PART_NAMES`): the
left eye + brow (with the left half of the nose bridge), the right one, and the mouth. Their boxes
in the final image are the axis-aligned bounds of the posed regions, so pixels outside them carry
no label information, and a box's size never gives the class away.

Crucial patches (`crucial_patches`): patch j is crucial if, for some part box B, the patch covers
at least `min_part_fraction` (25 %) of B's area, or B covers at least `min_patch_fraction` (30 %)
of the patch's area. The first rule catches the patches a part mostly falls in when parts are
smaller than patches (M ≤ 16 at 144 px); the second the patches lying inside a part when patches
are smaller than parts (large M).

Determinism: image i is drawn from `np.random.default_rng([seed, i])` alone (labels from a
per-block-of-7 permutation when class balanced), so the same arguments give identical bytes and
the first k of N images equal the k images generated alone.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import zipfile
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from lnl_jax import geometry, io
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError

CLASS_NAMES = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')  # RAF-DB
PART_NAMES = ('left eye and brow', 'right eye and brow', 'mouth')  # image left / right
# Canonical (top, left, bottom, right) regions the expressive parts are clipped to.
PART_REGIONS = np.array([
    (0.25, 0.25, 0.49, 0.50),
    (0.25, 0.50, 0.49, 0.75),
    (0.65, 0.33, 0.86, 0.67),
], np.float64)
# Part of every cache file's key: any edit of this module (the drawing lives here) invalidates the
# faces cached by an earlier version of it.
with open(__file__, 'rb') as _source:
  SOURCE_DIGEST = hashlib.sha1(_source.read()).hexdigest()[:12]

MAX_ROTATION_DEG = 10.0
MAX_TRANSLATION = 0.06  # fraction of the image side
MAX_SCALE_CHANGE = 0.08
MIN_INTENSITY = 0.45  # fraction of the full expression shown, drawn uniformly up to 1
_SUPERSAMPLE = 2
_LABEL_STREAM = 0x5EED  # extra seed word of the class-balanced label permutations
_BALANCE_BLOCK = len(CLASS_NAMES)

# Expression parameters (canonical units; y grows downwards). brow_in / brow_out: vertical offset
# of the brow's inner / outer end (negative raises it); brow_arch lifts its middle; brow_pinch
# pulls the inner end towards the midline. mouth_curve lifts the corners; mouth_round is the lip
# profile exponent (1 parabola, 0.5 round 'O'); lip_raise lifts the upper lip (disgust);
# asym makes one brow lower / one side of the upper lip higher; wrinkle darkens nose-bridge lines.
_NEUTRAL = dict(eye_up=0.026, eye_lo=0.018, brow_in=0.0, brow_out=0.0, brow_arch=0.008,
                brow_pinch=0.0, mouth_hw=0.085, mouth_curve=0.0, mouth_open=0.0, mouth_round=1.0,
                lip_scale=1.0, lip_raise=0.0, teeth=0.5, asym=0.0, wrinkle=0.0)
_EXPRESSIONS = {
    'surprise': dict(eye_up=0.046, eye_lo=0.030, brow_in=-0.045, brow_out=-0.035, brow_arch=0.022,
                     mouth_hw=0.05, mouth_open=0.075, mouth_round=0.5, lip_scale=0.8, teeth=0.1),
    'fear': dict(eye_up=0.042, eye_lo=0.026, brow_in=-0.042, brow_out=-0.018, brow_arch=-0.004,
                 brow_pinch=0.008, mouth_hw=0.11, mouth_curve=-0.012, mouth_open=0.035,
                 lip_scale=0.7, lip_raise=0.005, teeth=0.5),
    'disgust': dict(eye_up=0.017, eye_lo=0.012, brow_in=0.02, brow_out=0.008, brow_arch=0.0,
                    brow_pinch=0.008, mouth_hw=0.08, mouth_curve=-0.018, mouth_open=0.006,
                    lip_scale=1.1, lip_raise=0.025, teeth=0.6, asym=0.012, wrinkle=1.0),
    'happiness': dict(eye_up=0.020, eye_lo=0.007, brow_in=-0.004, brow_out=-0.004, brow_arch=0.01,
                      mouth_hw=0.11, mouth_curve=0.045, mouth_open=0.025, lip_scale=0.9, teeth=0.6),
    'sadness': dict(eye_up=0.018, eye_lo=0.017, brow_in=-0.035, brow_out=0.012, brow_arch=-0.008,
                    brow_pinch=0.004, mouth_hw=0.075, mouth_curve=-0.035),
    'anger': dict(eye_up=0.016, eye_lo=0.016, brow_in=0.03, brow_out=-0.012, brow_arch=0.0,
                  brow_pinch=0.014, mouth_hw=0.065, mouth_curve=-0.006, lip_scale=0.35),
    'neutral': {},
}
_JITTER = dict(eye_up=0.004, eye_lo=0.003, brow_in=0.006, brow_out=0.005, brow_arch=0.004,
               brow_pinch=0.003, mouth_hw=0.01, mouth_curve=0.007, mouth_open=0.006,
               mouth_round=0.08, lip_scale=0.12, lip_raise=0.003, teeth=0.1, asym=0.003,
               wrinkle=0.0)
_LOWER_BOUND = dict(eye_up=0.008, eye_lo=0.004, mouth_hw=0.04, mouth_open=0.0, mouth_round=0.45,
                    lip_scale=0.25, lip_raise=0.0, teeth=0.0, asym=0.0, wrinkle=0.0)

_SKIN_LIGHT, _SKIN_DARK = np.array([242, 208, 182]), np.array([92, 58, 40])
_HAIR = np.array([[25, 20, 18], [70, 45, 30], [120, 80, 45], [200, 165, 100], [150, 70, 35],
                  [150, 150, 150]], np.float64)


class SyntheticParts(NamedTuple):
  """Where the cues are, per image: what `generate_with_parts` returns beside the records."""
  part_boxes: np.ndarray  # (N, K=3, 4) float32 (top, left, bottom, right) px, order PART_NAMES
  occluder_boxes: np.ndarray  # (N, 4) float32 (top, left, bottom, right) px; -1s without occluder


@dataclasses.dataclass
class _Face:
  """Everything drawn for one image: class-independent nuisances and the expression parameters."""
  expression: dict
  pose: np.ndarray  # (2, 3) affine map from canonical unit coordinates to unit image coordinates
  skin: np.ndarray
  hair: np.ndarray
  background: np.ndarray
  clothes: np.ndarray
  iris: np.ndarray
  lips: np.ndarray
  face_radii: tuple
  hair_style: tuple  # (back-hair length, hairline height, part side)
  nose: tuple  # (half width, tip y)
  brow_thickness: float
  brow_height: float
  gaze: tuple
  occluder: tuple | None  # (kind, centre x, centre y, half size, angle, colour)
  light: tuple  # (brightness, gradient strength, gradient angle)
  noise_std: float
  noise_seed: int


def _expression(label: int, rng: np.random.Generator) -> dict:
  """The parameters of one face showing class `label` at a random intensity, jittered."""
  target = {**_NEUTRAL, **_EXPRESSIONS[CLASS_NAMES[label]]}
  intensity = rng.uniform(MIN_INTENSITY, 1.0)
  params = {}
  for name, neutral in _NEUTRAL.items():
    value = neutral + intensity * (target[name] - neutral) + _JITTER[name] * rng.standard_normal()
    params[name] = max(value, _LOWER_BOUND.get(name, -np.inf))
  params['asym_side'] = rng.choice([-1.0, 1.0])
  return params


def _random_pose(rng: np.random.Generator) -> np.ndarray:
  angle = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
  scale = 1.0 + rng.uniform(-MAX_SCALE_CHANGE, MAX_SCALE_CHANGE)
  shift = rng.uniform(-MAX_TRANSLATION, MAX_TRANSLATION, size=2)
  c, s = scale * math.cos(angle), scale * math.sin(angle)
  linear = np.array([[c, -s], [s, c]])
  return np.concatenate([linear, (0.5 + shift - linear @ [0.5, 0.5])[:, None]], axis=1)


def _sample_face(label: int, rng: np.random.Generator, occlusion_prob: float) -> _Face:
  """Draws all random choices of one image from `rng`, in a fixed order."""
  expression = _expression(label, rng)
  pose = _random_pose(rng)
  skin = _SKIN_LIGHT + rng.uniform() * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 6, 3)
  hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2) + rng.normal(0, 8, 3)
  background = rng.uniform(30, 230, 3)
  clothes = rng.uniform(20, 235, 3)
  iris = rng.uniform([40, 30, 10], [120, 140, 160])
  lips = skin * rng.uniform(0.55, 0.72) + np.array([55, 5, 10])
  face_radii = (rng.uniform(0.27, 0.31), rng.uniform(0.36, 0.40))
  hair_style = (rng.uniform(0.0, 0.35), rng.uniform(0.17, 0.235), rng.uniform(-1, 1))
  nose = (rng.uniform(0.035, 0.055), rng.uniform(0.59, 0.625))
  brow_thickness = rng.uniform(0.011, 0.019)
  brow_height = rng.uniform(-0.006, 0.006)
  gaze = tuple(rng.uniform([-0.012, -0.004], [0.012, 0.004]))
  # The occluder is drawn whether used or not, so that occlusion_prob changes nothing else.
  occluded = rng.uniform() < occlusion_prob
  kind = 'hand' if rng.uniform() < 0.5 else 'box'
  hand_colour = _SKIN_LIGHT + rng.uniform() * (_SKIN_DARK - _SKIN_LIGHT)
  colour = hand_colour if kind == 'hand' else np.full(3, rng.uniform(0, 140))
  place = rng.uniform([0.25, 0.25, 0.09, -np.pi], [0.75, 0.8, 0.18, np.pi])
  occluder = (kind, *place, colour) if occluded else None
  light = (rng.uniform(0.8, 1.15), rng.uniform(0.0, 0.35), rng.uniform(-np.pi, np.pi))
  noise_std = rng.uniform(2.0, 9.0)
  noise_seed = int(rng.integers(2**32))
  return _Face(expression, pose, skin, hair, background, clothes, iris, lips, face_radii,
               hair_style, nose, brow_thickness, brow_height, gaze, occluder, light, noise_std,
               noise_seed)


# --- canonical geometry: (k, 2) arrays of (x, y) points in the unit square -----------------------

def _ellipse(cx, cy, rx, ry, n=32, angle=0.0) -> np.ndarray:
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  x, y = rx * np.cos(t), ry * np.sin(t)
  c, s = math.cos(angle), math.sin(angle)
  return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _band(x, y, thickness) -> np.ndarray:
  """A polygon of given vertical thickness around the polyline (x, y)."""
  return np.concatenate([np.stack([x, y - thickness / 2], 1),
                         np.stack([x, y + thickness / 2], 1)[::-1]])


def _eye_parts(face: _Face, side: int):
  """(polygon, colour) list of one eye and brow; side −1 is the image-left eye, +1 the right."""
  e = face.expression
  ex, ey, hw = 0.5 + side * 0.12, 0.42, 0.06
  u = np.linspace(-1, 1, 17)
  x = ex + hw * u
  upper = ey - e['eye_up'] * (1 - u**2)**0.8
  lower = ey + e['eye_lo'] * (1 - u**2)**0.8
  white = np.array([238, 236, 230])
  parts = [(np.concatenate([np.stack([x, upper], 1), np.stack([x, lower], 1)[::-1]]), white)]

  def in_eye(points):  # clamps a disc to the lids, i.e. intersects it with the eye
    px = np.clip(points[:, 0], x[0], x[-1])
    py = np.clip(points[:, 1], np.interp(px, x, upper), np.interp(px, x, lower))
    return np.stack([px, py], 1)

  ix, iy = ex + face.gaze[0], ey + face.gaze[1]
  parts += [(in_eye(_ellipse(ix, iy, 0.021, 0.021, 24)), face.iris),
            (in_eye(_ellipse(ix, iy, 0.009, 0.009, 16)), np.array([15, 12, 12])),
            (_band(x, upper, 0.007), np.array([30, 22, 20]))]
  # Brow: v runs from the outer end (0) to the inner end (1).
  v = np.linspace(0, 1, 13)
  outer_x, inner_x = ex + side * 0.08, ex - side * (0.065 + e['brow_pinch'])
  lowered = e['asym'] if side == e['asym_side'] else 0.0
  by = 0.345 + face.brow_height + lowered
  brow_y = by + e['brow_out'] * (1 - v) + e['brow_in'] * v - 4 * e['brow_arch'] * v * (1 - v)
  brow_x = outer_x + (inner_x - outer_x) * v
  thickness = face.brow_thickness * (0.55 + 0.7 * v)
  parts.append((_band(brow_x, brow_y, thickness), np.minimum(face.hair * 0.6, face.skin * 0.55)))
  if e['wrinkle'] > 0.05:  # disgust: nose-bridge wrinkles, this side's half
    shade = face.skin * (1 - 0.45 * min(e['wrinkle'], 1.0))
    for k in range(3):
      wx = 0.5 + side * np.linspace(0.0, 0.035, 6)
      wy = 0.425 + 0.017 * k + 0.004 * np.linspace(0, 1, 6)**2
      parts.append((_band(wx, wy, 0.0045), shade))
  return parts


def _mouth_parts(face: _Face):
  """(polygon, colour) list of the mouth: lips, opening, teeth, or the closed-lips line."""
  e = face.expression
  cx, cy, hw = 0.5, 0.745, e['mouth_hw']
  u = np.linspace(-1, 1, 21)
  x = cx + hw * u
  middle = cy - e['mouth_curve'] * u**2  # corners lifted by mouth_curve
  profile = (1 - u**2)**e['mouth_round']
  raise_ = e['lip_raise'] * np.clip(1 + 0.8 * e['asym_side'] * u, 0, 2)
  upper_inner = middle - (e['mouth_open'] / 2 + raise_) * profile
  lower_inner = middle + e['mouth_open'] / 2 * profile
  taper = (1 - u**2)**0.6
  upper_outer = upper_inner - 0.011 * e['lip_scale'] * taper
  lower_outer = lower_inner + 0.015 * e['lip_scale'] * taper

  def outline(top, bottom):
    return np.concatenate([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])

  parts = [(outline(upper_outer, lower_outer), face.lips)]
  gap = lower_inner - upper_inner
  if gap.max() > 0.004:
    parts.append((outline(upper_inner, lower_inner), np.array([55, 18, 22])))
    teeth = upper_inner + e['teeth'] * 0.6 * gap
    parts.append((outline(upper_inner, np.minimum(teeth, lower_inner)), np.array([235, 230, 215])))
  else:
    parts.append((_band(x, middle, 0.006), face.lips * 0.45))
  return parts


def _clip_to(parts, region):
  top, left, bottom, right = region
  return [(np.clip(p, [left, top], [right, bottom]), c) for p, c in parts]


def _distractor_parts(face: _Face):
  """(polygon, colour) list of everything that does not depend on the class, back to front."""
  rx, ry = face.face_radii
  back_len, hairline, part_side = face.hair_style
  parts = [
      (_ellipse(0.5, 0.42 + back_len / 2, rx + 0.05, 0.33 + back_len / 2, 40), face.hair),
      (_ellipse(0.5, 1.22, 0.48, 0.3, 32), face.clothes),
      (np.array([[0.41, 0.75], [0.59, 0.75], [0.61, 1.05], [0.39, 1.05]]), face.skin * 0.88),
      (_ellipse(0.5 - rx + 0.005, 0.49, 0.035, 0.065, 20), face.skin * 0.93),
      (_ellipse(0.5 + rx - 0.005, 0.49, 0.035, 0.065, 20), face.skin * 0.93),
      (_ellipse(0.5, 0.53, rx, ry, 48), face.skin),
  ]
  # The fringe: the band between the top of the (slightly enlarged) face and the hairline, which
  # dips at the parting.
  x = np.linspace(-1, 1, 41)
  top = 0.53 - (ry + 0.012) * np.sqrt(1 - x**2)
  hairline_y = hairline + 0.035 * np.clip(1 - np.abs(x + 0.4 * part_side), 0, 1)
  x = 0.5 + (rx + 0.012) * x
  parts.append((np.concatenate([np.stack([x, top], 1),
                                np.stack([x, np.maximum(top, hairline_y)], 1)[::-1]]), face.hair))
  half_width, tip = face.nose
  nose_shade = face.skin * 0.8
  parts += [
      (np.array([[0.49, 0.44], [0.5 - half_width * 0.8, tip], [0.5 + half_width * 0.8, tip],
                 [0.51, 0.44]]), face.skin * 0.94),
      (_ellipse(0.5, tip, half_width * 0.55, 0.018, 20), face.skin * 1.03),
      (_ellipse(0.5 - half_width * 0.55, tip + 0.012, 0.011, 0.006, 12), nose_shade * 0.6),
      (_ellipse(0.5 + half_width * 0.55, tip + 0.012, 0.011, 0.006, 12), nose_shade * 0.6),
  ]
  return parts


def _occluder_parts(face: _Face):
  if face.occluder is None:
    return []
  kind, cx, cy, half, angle, colour = face.occluder
  if kind == 'box':
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [half, half * 0.8]
    c, s = math.cos(angle / 4), math.sin(angle / 4)
    return [(corners @ np.array([[c, s], [-s, c]]) + [cx, cy], colour)]
  palm = [(_ellipse(cx, cy, half * 0.75, half, 28, angle), colour)]
  fingers = []
  for k in range(4):  # four fingers fanning out from the palm's top edge
    a = angle + (k - 1.5) * 0.28
    base = np.array([cx, cy]) + half * 0.8 * np.array([math.sin(a), -math.cos(a)])
    fingers.append((_ellipse(*(base + half * 0.55 * np.array([math.sin(a), -math.cos(a)])),
                             half * 0.15, half * 0.6, 16, a), colour * 0.97))
  return palm + fingers


def _occluder_box(face: _Face, image_size: int) -> np.ndarray:
  """(top, left, bottom, right) pixel box of the occluder, clipped to the image; -1s if none."""
  parts = _occluder_parts(face)
  if not parts:
    return np.full(4, -1.0)
  box = _bounds(np.concatenate([p for p, _ in parts]), face.pose) * image_size
  return np.clip(box, 0, image_size)


def _to_image(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
  """Canonical (k, 2) points to unit image coordinates."""
  return points @ pose[:, :2].T + pose[:, 2]


def _bounds(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
  """(top, left, bottom, right) in unit image coordinates of the posed points."""
  p = _to_image(points, pose)
  return np.array([p[:, 1].min(), p[:, 0].min(), p[:, 1].max(), p[:, 0].max()])


def _part_boxes(face: _Face, image_size: int) -> np.ndarray:
  """(K, 4) pixel boxes of the posed PART_REGIONS, clipped to the image."""
  boxes = []
  for top, left, bottom, right in PART_REGIONS:
    corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom]])
    boxes.append(_bounds(corners, face.pose))
  return np.clip(np.array(boxes) * image_size, 0, image_size)


def _render(face: _Face, image_size: int) -> np.ndarray:
  """The (S, S, 3) uint8 image of a face."""
  canvas = _SUPERSAMPLE * image_size
  image = Image.new('RGB', (canvas, canvas), tuple(int(c) for c in face.background))
  draw = ImageDraw.Draw(image)
  expressive = (_clip_to(_eye_parts(face, -1), PART_REGIONS[0])
                + _clip_to(_eye_parts(face, +1), PART_REGIONS[1])
                + _clip_to(_mouth_parts(face), PART_REGIONS[2]))
  for points, colour in _distractor_parts(face) + expressive + _occluder_parts(face):
    xy = _to_image(points, face.pose) * canvas
    fill = tuple(int(c) for c in np.clip(colour, 0, 255))
    draw.polygon(xy.ravel().tolist(), fill=fill)
  pixels = np.asarray(image.reduce(_SUPERSAMPLE), np.float32)
  brightness, strength, angle = face.light
  ramp = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
  light = brightness * (1 + strength * (math.cos(angle) * ramp[None, :]
                                        + math.sin(angle) * ramp[:, None]))
  noise = np.random.default_rng(face.noise_seed).standard_normal(pixels.shape, np.float32)
  noise *= face.noise_std
  pixels *= light[:, :, None]
  pixels += noise
  return np.clip(np.rint(pixels, out=pixels), 0, 255, out=pixels).astype(np.uint8)


# --- public API ---------------------------------------------------------------------------------

def crucial_patches(part_boxes: np.ndarray, image_size: int, num_patches: int, overlap: int,
                    min_part_fraction: float = 0.25,
                    min_patch_fraction: float = 0.30) -> np.ndarray:
  """(N, M) bool: patch j holds a part (see the module docstring for the rule).

  Args:
    part_boxes: (N, K, 4) (top, left, bottom, right) pixel boxes.
    image_size, num_patches, overlap: the patch grid, as in `geometry.patch_geometry`.
    min_part_fraction: share of a part box's area a patch must cover.
    min_patch_fraction: or share of a patch's area a part box must cover.
  """
  patches = np.array(geometry.patch_geometry(image_size, num_patches, overlap).boxes(), np.float64)
  boxes = np.asarray(part_boxes, np.float64)[:, :, None, :]  # (N, K, 1, 4)
  p = patches[None, None]  # (1, 1, M, 4)
  height = np.minimum(boxes[..., 2], p[..., 2]) - np.maximum(boxes[..., 0], p[..., 0])
  width = np.minimum(boxes[..., 3], p[..., 3]) - np.maximum(boxes[..., 1], p[..., 1])
  inter = np.clip(height, 0, None) * np.clip(width, 0, None)  # (N, K, M)
  part_area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
  patch_area = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
  crucial = ((inter >= min_part_fraction * part_area) & (inter > 0)) | (
      inter >= min_patch_fraction * patch_area)
  return crucial.any(axis=1)


def _label(index: int, seed: int, class_balance: bool, rng: np.random.Generator) -> int:
  if not class_balance:
    return int(rng.integers(len(CLASS_NAMES)))
  block_rng = np.random.default_rng([seed, _LABEL_STREAM, index // _BALANCE_BLOCK])
  return int(block_rng.permutation(_BALANCE_BLOCK)[index % _BALANCE_BLOCK])


def _check_arguments(num_images, image_size, seed, num_patches, overlap, occlusion_prob):
  if not isinstance(num_images, (int, np.integer)) or num_images < 0:
    raise ConfigError(
        f'synthetic num_images={num_images!r} must be a non-negative integer.')
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ConfigError(f'synthetic seed={seed!r} must be a non-negative integer.')
  if not 0.0 <= occlusion_prob <= 1.0:
    raise ConfigError(
        f'synthetic occlusion_prob={occlusion_prob!r} must be a probability in [0, 1].')
  if image_size < 32:
    raise ConfigError(
        f'data.image_size={image_size} is too small for synthetic faces; use a multiple of 16 '
        'from 32 (144 is the paper\'s size).')
  geometry.patch_geometry(image_size, num_patches, overlap)  # raises ConfigError when unbuildable


def generate_with_parts(num_images: int, image_size: int = 144, seed: int = 0,
                        num_patches: int = 16, overlap: int = 16, occlusion_prob: float = 0.0,
                        class_balance: bool = True) -> tuple[Records, SyntheticParts]:
  """`generate`'s records, plus each image's crucial-part and occluder boxes."""
  _check_arguments(num_images, image_size, seed, num_patches, overlap, occlusion_prob)
  images = np.empty((num_images, image_size, image_size, 3), np.uint8)
  labels = np.empty(num_images, np.int32)
  part_boxes = np.empty((num_images, len(PART_NAMES), 4), np.float32)
  occluder_boxes = np.empty((num_images, 4), np.float32)
  for i in range(num_images):
    rng = np.random.default_rng([seed, i])
    labels[i] = _label(i, seed, class_balance, rng)
    face = _sample_face(int(labels[i]), rng, occlusion_prob)
    images[i] = _render(face, image_size)
    part_boxes[i] = _part_boxes(face, image_size)
    occluder_boxes[i] = _occluder_box(face, image_size)
  parts = SyntheticParts(part_boxes, occluder_boxes)
  return _records(images, labels, parts, seed, num_patches, overlap, occlusion_prob), parts


def _records(images, labels, parts, seed, num_patches, overlap, occlusion_prob) -> Records:
  image_size = images.shape[1]
  return Records(
      class_names=CLASS_NAMES, labels=labels, images=images, subjects=None,
      crucial=crucial_patches(parts.part_boxes, image_size, num_patches, overlap),
      source=f'synthetic faces (seed={seed}, {image_size} px, occlusion_prob={occlusion_prob})')


def generate(num_images: int, image_size: int = 144, seed: int = 0, num_patches: int = 16,
             overlap: int = 16, occlusion_prob: float = 0.0, class_balance: bool = True) -> Records:
  """`num_images` synthetic faces with labels and (N, M) crucial-patch flags.

  Args:
    num_images: N.
    image_size: S, a multiple of 16 from 32 (the faces are drawn in normalised coordinates).
    seed: non-negative; the same arguments always give identical bytes.
    num_patches, overlap: the patch grid `crucial` refers to (`geometry.patch_geometry`).
    occlusion_prob: chance that an image gets a grey/black box or a hand over a random region;
      it changes nothing else in the image, and `crucial` still marks the occluded parts.
    class_balance: labels cycle through a random permutation of the 7 classes every 7 images
      (exactly balanced); otherwise each label is uniform at random.
  """
  return generate_with_parts(num_images, image_size, seed, num_patches, overlap, occlusion_prob,
                             class_balance)[0]


def load_or_generate(num_images: int, image_size: int = 144, seed: int = 0,
                     num_patches: int = 16, overlap: int = 16, occlusion_prob: float = 0.0,
                     class_balance: bool = True, cache_dir: str | None = None,
                     with_parts: bool = False):
  """`generate` (or `generate_with_parts` when `with_parts`), cached in `cache_dir`: the labels and
  boxes in an .npz, the images beside it in an .npy that is memory-mapped read-only when read back
  (nothing is copied at start: the input pipeline reads the pages as it reaches them).

  The files are keyed by every argument that changes the pixels and by this module's source; the
  patch grid is not part of the key, since `crucial` is recomputed from the stored part boxes. A
  missing, unreadable or mismatched pair is (re)generated and written atomically, the images
  first; one that cannot be written is only warned about.
  """
  if cache_dir is None:
    records, parts = generate_with_parts(num_images, image_size, seed, num_patches, overlap,
                                         occlusion_prob, class_balance)
    return (records, parts) if with_parts else records
  _check_arguments(num_images, image_size, seed, num_patches, overlap, occlusion_prob)
  key = (f'src{SOURCE_DIGEST}-n{num_images}-s{image_size}-seed{seed}-occ{occlusion_prob!r}'
         f'-bal{int(class_balance)}')
  digest = hashlib.sha1(key.encode()).hexdigest()[:12]
  path = os.path.join(cache_dir, f'synthetic_faces_{digest}.npz')
  images_path = os.path.join(cache_dir, f'synthetic_faces_{digest}.images.npy')
  cached = _read_cached(path, images_path, key, image_size)
  if cached is not None:
    images, labels, parts = cached
  else:
    records, parts = generate_with_parts(num_images, image_size, seed, num_patches, overlap,
                                         occlusion_prob, class_balance)
    images, labels = records.images, records.labels
    try:
      io.write_atomic(images_path, lambda f: np.save(f, images))
      io.write_atomic(path, lambda f: np.savez(
          f, key=key, labels=labels, part_boxes=parts.part_boxes,
          occluder_boxes=parts.occluder_boxes))
    except OSError as e:  # a full disk or an unwritable folder costs the next run the drawing only
      logging.warning('Could not keep the synthetic faces in %s (%s); continuing without the cache '
                      '(--data_cache chooses another folder).', path, e)
  records = _records(images, labels, parts, seed, num_patches, overlap, occlusion_prob)
  return (records, parts) if with_parts else records


def _read_cached(path: str, images_path: str, key: str, image_size: int):
  """(the images, memory-mapped read-only; the labels; the parts) kept at `path` and `images_path`
  for `key`, or None if there are none, or they are unreadable or mismatched (drawn again)."""
  try:
    with np.load(path) as cached:
      if str(cached['key']) != key:
        return None
      labels = cached['labels']
      parts = SyntheticParts(cached['part_boxes'], cached['occluder_boxes'])
    images = np.load(images_path, mmap_mode='r')
    if images.shape != (len(labels), image_size, image_size, 3) or images.dtype != np.uint8:
      raise ValueError(f'{images_path} holds {images.shape} {images.dtype} images')
    return images, labels, parts
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # cut short, foreign
    logging.warning('Regenerating unreadable synthetic-face cache %s with %s (%s: %s)', path,
                    os.path.basename(images_path), type(e).__name__, e)
    return None
