"""Lowered programs kept on disk (`jax.export`), so that a later process running the same program
skips tracing and lowering it.

JAX's persistent compilation cache keeps XLA's compiled programs, keyed by the lowered program, so a
process still traces and lowers a function (seconds for the train step) before it finds the
compiled one. A `StoredFunction` keeps the lowered program itself, keyed by everything that shapes
it: the source files of this package; the versions of JAX, jaxlib, Flax, Optax and NumPy; JAX's
configuration; the settings the function is bound to (the model's fields, the optimiser's and the
loss's settings); and the tree, shapes, dtypes and shardings of its arguments. A change to any of
them gives a new key, never an old program. The programs are read back as trusted data (the
output's tree structure is pickled), like the compilation cache beside them.

The commands keep the programs in `<compilation cache>/lowered` (`cli.enable_compilation_cache`);
no directory (the cache disabled) or several processes (each would write) mean plain `jax.jit`.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import pickle
import tempfile

import flax
import jax
import jaxlib
import numpy as np
import optax
from absl import logging

_directory: str | None = None


def enable(directory: str | None) -> None:
  """Keeps lowered programs in `directory` from now on (None or '': nowhere)."""
  global _directory
  _directory = os.path.expanduser(directory) if directory else None


def directory() -> str | None:
  """Where this process keeps lowered programs: None when disabled or when several processes run."""
  return _directory if jax.process_count() == 1 else None


PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def code_digest(root: str = PACKAGE_ROOT) -> bytes:
  """Digest of the package's sources under `root` and of the versions of the libraries the steps
  trace."""
  h = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(root, '**', '*.py'), recursive=True)):
    h.update(os.path.relpath(path, root).encode())
    with open(path, 'rb') as f:
      h.update(hashlib.sha256(f.read()).digest())
  for module in (jax, jaxlib, flax, optax, np):
    h.update(f'{module.__name__} {module.__version__}'.encode())
  return h.digest()


def program_key(name: str, settings: tuple, tree, avals, out_shardings) -> str:
  """The file name of a lowered program: the digest of everything that shapes it."""
  h = hashlib.sha256(code_digest())
  devices = sorted({(d.platform, d.device_kind) for a in avals for d in a.sharding.device_set})
  for part in (name, settings, tree, [(a.shape, a.dtype.name, a.sharding) for a in avals],
               out_shardings, devices, sorted(jax.config.values.items())):
    h.update(repr(part).encode())
  return f'{name}-{h.hexdigest()[:32]}'


class StoredFunction:
  """`jax.jit(fn, ...)` whose lowered program for each argument signature is read from the store
  directory when it is there and written there when it is not.

  `settings` must name everything `fn` is bound to (its model, its hyper-parameters): with the
  arguments' signature and the code they make the program's key. `in_shardings` is one sharding per
  positional argument, `out_shardings` one for every output.
  """

  def __init__(self, fn, name: str, settings: tuple, store: str, *, in_shardings: tuple,
               out_shardings, donate_argnums: tuple[int, ...] = (), compiler_options=None):
    self._fn, self._name, self._settings, self._store = fn, name, settings, store
    self._in_shardings, self._out_shardings = in_shardings, out_shardings
    self._donate_argnums, self._compiler_options = donate_argnums, compiler_options
    self._programs = {}  # argument signature -> (jitted call of the flat program, output tree)

  def __call__(self, *args):
    leaves, tree = jax.tree.flatten(args)
    signature = (tree, tuple((x.shape, x.dtype) for x in leaves))
    if signature not in self._programs:
      self._programs[signature] = self._program(args, tree)
    call, out_tree = self._programs[signature]
    return jax.tree.unflatten(out_tree, call(*leaves))

  def _program(self, args, tree):
    shardings, donated = [], []
    for i, (arg, sharding) in enumerate(zip(args, self._in_shardings)):
      for _ in jax.tree.leaves(arg):
        donated.append(i in self._donate_argnums)
        shardings.append(sharding)
    avals = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
             for x, s in zip(jax.tree.leaves(args), shardings)]
    path = os.path.join(self._store, program_key(self._name, self._settings, tree, avals,
                                                 self._out_shardings) + '.exported')
    exported, out_tree = _read(path)
    if exported is None:
      exported, out_tree = self._export(tree, shardings, avals)
      _write(path, exported, out_tree)
    call = jax.jit(exported.call, in_shardings=tuple(shardings),
                   out_shardings=self._out_shardings,
                   donate_argnums=tuple(i for i, d in enumerate(donated) if d),
                   compiler_options=self._compiler_options)
    return call, out_tree

  def _export(self, tree, shardings, avals):
    out_trees = []

    def flat_fn(*leaves):
      out_leaves, out_tree = jax.tree.flatten(self._fn(*jax.tree.unflatten(tree, leaves)))
      out_trees.append(out_tree)
      return out_leaves

    exported = jax.export.export(jax.jit(flat_fn, in_shardings=tuple(shardings),
                                         out_shardings=self._out_shardings))(*avals)
    return exported, out_trees[-1]


def _read(path: str):
  """(the Exported, its output tree) kept at `path`, or (None, None) if there is none or it is
  unreadable (then written anew)."""
  if not os.path.exists(path):
    return None, None
  try:
    with open(path, 'rb') as f:
      record = pickle.load(f)
    return jax.export.deserialize(bytearray(record['exported'])), record['out_tree']
  except Exception as e:  # pylint: disable=broad-except  # a partial or foreign file: lower again
    logging.warning('lowered program %s unreadable (%s: %s); lowering it again', path,
                    type(e).__name__, e)
    return None, None


def _write(path: str, exported, out_tree) -> None:
  """Writes the program atomically; a store that cannot be written is reported, not fatal."""
  record = dict(exported=exported.serialize(), out_tree=out_tree)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile('wb', dir=os.path.dirname(path), suffix='.tmp',
                                     delete=False) as f:
      try:
        pickle.dump(record, f)
      except BaseException:
        os.remove(f.name)
        raise
    os.replace(f.name, path)
  except OSError as e:
    logging.warning('could not keep the lowered program in %s: %s', path, e)
