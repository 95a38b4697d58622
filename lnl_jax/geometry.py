"""Patch geometry of Eq. (5) and the checks that keep a configuration buildable.

The paper cuts F9 (the U-Net's last feature map, the input's resolution) into M = n×n overlapping
P×P patches with n·P − (n−1)·γ·P = S (Sec. III-B, Eq. 5). Here the overlap is given in pixels (o = γP,
Table VII), so P = (S + (n−1)·o)/n. When that is not a whole number (e.g. S=144, n=4, o=22 gives 52.5),
P is rounded up and the n patch origins are spread evenly over [0, S−P] and rounded, so the patches
always cover the image exactly, with an overlap within one pixel of the one asked for.
"""
from __future__ import annotations

import dataclasses
import math

from lnl_jax.errors import ConfigError

UNET_DOWNSAMPLING = 16  # four 2×2 max-poolings (Fig. 4)
SIMPLENET_DOWNSAMPLING = 8  # three 2×2 max-poolings (Table II)
LOCAL_ATTENTION_MIN_MAP = 5  # Table III: two valid 3×3 convs need a ≥5×5 map to leave ≥1×1


@dataclasses.dataclass(frozen=True)
class PatchGeometry:
  image_size: int  # S
  grid: int  # n = √M
  patch_size: int  # P
  origins: tuple[int, ...]  # top/left pixel of the n patch rows/columns, ascending

  @property
  def num_patches(self) -> int:
    return self.grid * self.grid

  @property
  def pooled_size(self) -> int:
    """Side of SimpleNet's last pooled map (6 for 48-px patches)."""
    return self.patch_size // SIMPLENET_DOWNSAMPLING

  @property
  def local_attention_valid(self) -> bool:
    """Whether Table III's valid convolutions fit; otherwise they run with 'SAME' padding."""
    return self.pooled_size >= LOCAL_ATTENTION_MIN_MAP

  def boxes(self) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) pixel box of every patch, in row-major patch order."""
    p = self.patch_size
    return [(y, x, y + p, x + p) for y in self.origins for x in self.origins]


def grid_side(num_patches: int) -> int:
  n = math.isqrt(num_patches) if num_patches > 0 else 0
  if num_patches < 1 or n * n != num_patches:
    raise ConfigError(
        f'model.num_patches={num_patches} is not n² for a whole n ≥ 1; the face is cut into an '
        'n×n grid (the paper uses M ∈ {4, 9, 16, 25, 36}).')
  return n


def patch_geometry(image_size: int, num_patches: int, overlap: int) -> PatchGeometry:
  """Geometry of the M overlapping patches of an S×S map (Eq. 5), validated."""
  n = grid_side(num_patches)
  check_image_size(image_size, n)
  if overlap < 0:
    raise ConfigError(
        f'model.overlap={overlap} px leaves gaps between patches, so they would not cover the '
        'image; use an overlap ≥ 0 (the paper uses 16 px at 144×144, M = 16).')
  p = math.ceil((image_size + (n - 1) * overlap) / n)
  if p > image_size or (n > 1 and overlap >= p):
    raise ConfigError(
        f'model.overlap={overlap} px is too large for {n}×{n} patches of a {image_size}-px image '
        f'(the patch side would be {p} px); use an overlap below {image_size // max(n - 1, 1)} px.')
  if p < SIMPLENET_DOWNSAMPLING:
    raise ConfigError(
        f'patches of {p} px are smaller than SimpleNet\'s three 2×2 poolings need (≥ 8 px); raise '
        f'data.image_size (now {image_size}) or lower model.num_patches (now {num_patches}).')
  if n == 1:
    origins = (0,)
  else:
    origins = tuple(round(i * (image_size - p) / (n - 1)) for i in range(n))
  return PatchGeometry(image_size=image_size, grid=n, patch_size=p, origins=origins)


def check_image_size(image_size: int, grid: int) -> None:
  if image_size <= 0 or image_size % UNET_DOWNSAMPLING:
    raise ConfigError(
        f'data.image_size={image_size} must be a positive multiple of 16 so that the U-Net\'s four '
        '2×2 poolings stay exact (the paper uses 144).')
  f5 = image_size // UNET_DOWNSAMPLING
  if f5 < grid:
    raise ConfigError(
        f'data.image_size={image_size} gives a {f5}×{f5} F5 map, smaller than the {grid}×{grid} '
        f'grid the non-local attention pools it to; use data.image_size ≥ {UNET_DOWNSAMPLING * grid}.')
