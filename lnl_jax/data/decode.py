"""Loading one image file into S×S×3 uint8 pixels with PIL.

TensorFlow's decoders know neither TIFF (JAFFE), 16-bit PNG nor CMYK JPEG, so files are decoded here
and the tf.data pipeline calls `load_image` through `tf.numpy_function`. Choices:
- EXIF orientation is ignored (pixels as stored), like `tf.io.decode_jpeg`: face boxes in the label
  files (AffectNet) refer to the stored pixel grid.
- Transparency (RGBA, LA, palette with a transparent colour) is composited on black.
- 16-bit grey ('I;16…') maps 0..65535 to 0..255 (÷257); 32-bit int ('I') and float ('F') images are
  taken as 8-bit, 16-bit or [0,1] data by their maximum, the only hint those modes carry.
- The face box is clipped to the image; a box that misses the image makes the file bad.
- Resizing is PIL bilinear, which antialiases when shrinking. Large JPEGs are first reduced by the
  decoder itself (`Image.draft`, DCT scaling) to no less than twice the needed size.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from lnl_jax.errors import DataError

_TRANSPARENT_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')


def load_image(path: str, box=None, image_size: int | None = None) -> np.ndarray:
  """Decodes `path`, crops `box` (top, left, height, width; -1s or None: whole image), resizes.

  Returns (image_size, image_size, 3) uint8, or the (H, W, 3) crop when image_size is None.
  Raises DataError naming the file and the reason for anything that is not a usable image.
  """
  try:
    with Image.open(path) as img:
      img = _crop(img, box, image_size, path)
      rgb = to_rgb(img)
  except DataError:
    raise
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # PIL raises UnidentifiedImageError (an OSError) for text or zero-byte files, OSError for
    # truncated ones, and ValueError/SyntaxError from some plugins on corrupt headers.
    raise DataError(f'cannot decode image {path}: {type(e).__name__}: {e}') from None
  if image_size is not None and rgb.size != (image_size, image_size):
    rgb = rgb.resize((image_size, image_size), Image.BILINEAR)
  return np.asarray(rgb, np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
  """8-bit RGB version of a PIL image of any mode (grey, palette, RGBA, CMYK, 16/32-bit, float)."""
  if img.mode == 'RGB':
    return img
  if img.mode.startswith('I;16'):
    return _from_array(np.asarray(img, np.float32) / 257.0)
  if img.mode in ('I', 'F'):
    a = np.asarray(img, np.float32)
    peak = float(np.nanmax(a)) if a.size else 0.0
    scale = 255.0 if (img.mode == 'F' and peak <= 1.0) else 1.0 if peak <= 255 else 1 / 257.0
    return _from_array(np.nan_to_num(a) * scale)
  if img.mode == 'P' and 'transparency' in img.info:
    img = img.convert('RGBA')
  if img.mode in _TRANSPARENT_MODES:
    rgba = np.asarray(img.convert('RGBA'), np.float32)
    return _from_array(rgba[..., :3] * (rgba[..., 3:] / 255.0))
  return img.convert('RGB')  # L, 1, P, CMYK, YCbCr, ...


def _from_array(a: np.ndarray) -> Image.Image:
  a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, axis=-1)
  return Image.fromarray(a, 'RGB')


def _crop(img: Image.Image, box, image_size: int | None, path: str) -> Image.Image:
  """Crops the face box (clipped to the image), first letting the JPEG decoder shrink big files."""
  w, h = img.size
  if w < 1 or h < 1:
    raise DataError(f'image {path} is empty ({w}×{h})')
  has_box = box is not None and np.any(np.asarray(box) >= 0)
  top, left, bh, bw = (int(v) for v in box) if has_box else (0, 0, h, w)
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + bh, h), min(left + bw, w)
  if y1 <= y0 or x1 <= x0:
    raise DataError(f'face box (top, left, height, width)={tuple(int(v) for v in box)} of {path} lies outside '
                    f'its {w}×{h} image')
  if image_size is not None and img.format == 'JPEG':
    # Ask for a decode where the box is still ≥ 2·image_size on each side (draft never goes below).
    need = (max(1, 2 * image_size * w // (x1 - x0)), max(1, 2 * image_size * h // (y1 - y0)))
    img.draft(None, need)
    sx, sy = img.size[0] / w, img.size[1] / h  # 1, 1/2, 1/4 or 1/8
    x0, y0 = int(x0 * sx), int(y0 * sy)
    x1, y1 = max(x0 + 1, round(x1 * sx)), max(y0 + 1, round(y1 * sy))
  img.load()  # decode now, so truncated files fail here with the file's name attached
  if (x0, y0, x1, y1) == (0, 0) + img.size:
    return img
  return img.crop((x0, y0, x1, y1))
