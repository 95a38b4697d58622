"""Shipping a trained model: its inference function serialized with `jax.export`.

  python -m lnl_jax.export --workdir=DIR --out=model.jaxexport [--checkpoint=latest|best|STEP]
      [--platforms=cpu,cuda]
  python -m lnl_jax.export --check --workdir=DIR --exported=model.jaxexport IMAGE_OR_FOLDER...

Exit status: 0 written or the check passed; 1 the check failed or the workdir/flags are unusable.

Three files are written:
  OUT              `Exported.serialize()` of  f(params, images) -> {probs, w_global, w_local}:
                   images (b, S, S, 3) uint8 RGB faces (b symbolic: any batch size), normalised
                   inside; probs (b, C) float32, w_global wᵍ and w_local wˡ (b, M) float32.
  OUT.params.npz   the parameters, one array per leaf, keyed by its '/'-joined path.
  OUT.json         the sidecar: class names, image size, input format, patch boxes, provenance.
The parameters are an argument rather than constants closed over: the full model's ~97M floats
would otherwise be embedded in the StableHLO module (slow to compile, twice the memory), and one
exported program serves every checkpoint of a config. `load_exported` reads the three with jax and
numpy alone; `--check` compares the exported function with the in-process model on sample images.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lnl_jax import cli, io, steps
from lnl_jax.checkpoints import Trained, load_trained
from lnl_jax.errors import ConfigError, DataError
from lnl_jax.inference import Predictor, expand_inputs, load_face

OUTPUTS = ('probs', 'w_global', 'w_local')
PLATFORMS = ('cpu', 'cuda')  # lowered for both, so an export made on either runs on either
TOLERANCE = 1e-5  # --check: largest accepted |Δ| of the probabilities

FLAGS = flags.FLAGS
cli.uses_cache_flags(data=False)
cli.define_workdir_flags()
cli.define_once(flags.DEFINE_string, 'out', None, 'File to write (with OUT.params.npz and OUT.json).')
flags.DEFINE_list('platforms', list(PLATFORMS), 'Platforms to lower for: cpu, cuda, rocm, tpu.')
flags.DEFINE_bool('check', False, 'Compare --exported with the workdir\'s model on sample images.')
flags.DEFINE_string('exported', None, '--check: the file --out wrote.')


def inference_fn(model):
  """f(params, images (b, S, S, 3) uint8) -> {probs, w_global, w_local}: `steps.eval_step` itself,
  traced once for a symbolic batch size (no padding)."""
  def infer(params, images):
    out = steps.eval_step(params, {'image': images}, model=model)
    return {k: out[k] for k in OUTPUTS}
  return infer


def export(trained: Trained, platforms: Sequence[str] = PLATFORMS) -> jax.export.Exported:
  """The inference function, polymorphic in the batch size b."""
  s = trained.image_size
  images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'b, {s}, {s}, 3'), jnp.uint8)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), trained.params)
  return jax.export.export(jax.jit(inference_fn(trained.model)), platforms=tuple(platforms))(
      params, images)


def sidecar(trained: Trained, exported: jax.export.Exported, out: str, workdir: str) -> dict:
  s, m, c = trained.image_size, trained.model.num_patches, len(trained.class_names)
  return dict(
      function='f(params, images) -> {probs, w_global, w_local}',
      files=dict(exported=os.path.basename(out), params=os.path.basename(out) + '.params.npz'),
      input=dict(shape=['b', s, s, 3], dtype='uint8',
                 description=f'RGB faces resized to {s}x{s} (PIL bilinear), pixels 0..255; '
                 'normalised inside as (x/255 - 0.5)/0.5'),
      outputs=dict(probs=['b', c], w_global=['b', m], w_local=['b', m]),
      class_names=list(trained.class_names), image_size=s, num_patches=m,
      patch_boxes=[list(b) for b in trained.model.geometry.boxes()],
      platforms=list(exported.platforms), checkpoint_step=trained.step,
      workdir=os.path.abspath(workdir), config=trained.config.get('name', ''),
      jax_version=jax.__version__)


def save(trained: Trained, out: str, workdir: str,
         platforms: Sequence[str] = PLATFORMS) -> dict:
  """Writes OUT, OUT.params.npz and OUT.json (each atomically); returns the sidecar."""
  exported = export(trained, platforms)
  info = sidecar(trained, exported, out, workdir)
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(trained.params))
  arrays = {'/'.join(k.key for k in path): np.asarray(v) for path, v in leaves}
  io.write_atomic(out + '.params.npz', lambda f: np.savez(f, **arrays))
  io.write_json(out + '.json', info)
  io.write_atomic(out, lambda f: f.write(exported.serialize()))
  return info


def load_exported(path):
  """(f(images) -> {probs, w_global, w_local}, sidecar dict) from `save`'s files.

  Self-contained: it needs only json, numpy (np) and jax, and can be copied into any program.
  """
  with open(path, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(path + '.json') as f:
    info = json.load(f)
  params = {}
  with np.load(path + '.params.npz') as arrays:
    for key in arrays.files:
      *parents, leaf = key.split('/')
      node = params
      for name in parents:
        node = node.setdefault(name, {})
      node[leaf] = arrays[key]
  params = jax.device_put(params)
  call = jax.jit(exported.call)
  return (lambda images: call(params, images)), info


def check(trained: Trained, path: str, images: np.ndarray) -> dict[str, float]:
  """Max |Δ| of every output between the exported function and the in-process model."""
  try:
    exported_fn, info = load_exported(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'cannot load the export {path} (with .json and .params.npz beside it): '
                      f'{type(e).__name__}: {e}') from None
  if info['image_size'] != trained.image_size or info['class_names'] != list(trained.class_names):
    raise ConfigError(f'{path} was exported for {info["image_size"]}-px images and classes '
                      f'{info["class_names"]}; the workdir\'s model has {trained.image_size} px and '
                      f'{list(trained.class_names)}.')
  got = jax.device_get(exported_fn(images))
  # The reference is traced here, not read from the store: both sides would pass through jax.export.
  want = Predictor(trained.model, trained.params, len(images), stored=False)(images)
  return {k: float(np.max(np.abs(np.asarray(got[k]) - np.asarray(want[k])))) for k in OUTPUTS}


def _load_images(inputs: Sequence[str], image_size: int) -> np.ndarray:
  files, problems = expand_inputs(inputs)
  images = []
  for path in files:
    try:
      images.append(load_face(path, image_size))
    except DataError as e:
      problems.append(str(e))
  for problem in problems:
    print(f'skipped: {" ".join(problem.split())}', file=sys.stderr)
  if not images:
    raise DataError(f'--check needs at least one readable image; none among {list(inputs)}.')
  return np.stack(images)


def run(inputs: Sequence[str]) -> bool:
  """Writes the export, or (--check) compares it with the workdir; returns whether all is well."""
  if not FLAGS.check:
    trained = load_trained(FLAGS.workdir, FLAGS.checkpoint)
    info = save(trained, FLAGS.out, FLAGS.workdir, FLAGS.platforms)
    print(f'wrote {FLAGS.out} (+ .params.npz, .json): checkpoint {info["checkpoint_step"]}, '
          f'input {info["input"]["shape"]} uint8, platforms {",".join(info["platforms"])}')
    return True
  if not os.path.exists(FLAGS.exported + '.json'):
    raise ConfigError(f'{FLAGS.exported}.json does not exist: --exported must be a file written '
                      'by python -m lnl_jax.export --out.')
  with open(FLAGS.exported + '.json') as f:
    step = str(json.load(f)['checkpoint_step'])
  # --check compares with the exported step unless --checkpoint names another.
  trained = load_trained(FLAGS.workdir, FLAGS.checkpoint if FLAGS['checkpoint'].present else step)
  diffs = check(trained, FLAGS.exported, _load_images(inputs, trained.image_size))
  ok = diffs['probs'] < TOLERANCE
  print(', '.join(f'{k}: max |Δ| = {v:.3g}' for k, v in diffs.items())
        + f' → {"OK" if ok else "MISMATCH"} (probabilities within {TOLERANCE:g}: {ok})')
  return ok


def main(argv: Sequence[str]) -> int:
  if FLAGS.check and not (FLAGS.exported and len(argv) > 1):
    raise app.UsageError('--check needs --exported=FILE and at least one IMAGE_OR_FOLDER')
  if not FLAGS.check and (not FLAGS.out or len(argv) > 1):
    raise app.UsageError('--out=FILE is required (or --check), and takes no images')
  cli.setup_process()
  return 0 if cli.run_or_exit(run, argv[1:]) else 1


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  cli.run(main)
