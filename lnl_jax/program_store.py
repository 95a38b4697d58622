"""Lowered programs kept on disk (`jax.export`), so that a later process running the same program
skips tracing and lowering it.

JAX's persistent compilation cache keeps XLA's compiled programs, keyed by the lowered program, so a
process still traces and lowers a function before it finds the compiled one. A `StoredFunction`
keeps the lowered program itself, keyed by everything that shapes it: the source files of this
package as this process imported them; the versions of Python, JAX, jaxlib, Flax, Optax, NumPy and
ml_dtypes; JAX's configuration; the function's name and every setting it is bound to (encoded field
by field: a value the encoding does not know turns the store off for that function); and the
tree, shapes, dtypes, shardings and devices of its arguments. A program read back is checked
against the arguments' shapes, dtypes and device count; anything unexpected is lowered again. A
function that cannot be exported (a host callback, a debug print) runs as plain `jax.jit`. The
programs are read back as trusted data (the output's tree structure is pickled), like the
compilation cache beside them.

`shapes` keeps the result shapes of a traced function of no arguments (the train state's, which
take tracing `Module.init`), keyed alike. The commands keep the train step, the eval step and the
train state's shapes (`train`, `steps.stored_abstract_state`, `inference.Predictor`) in
`<compilation cache>/lowered` (`cli.enable_compilation_cache`); no directory (the cache disabled)
or several processes (each would write) mean plain `jax.jit`.

`StoredFunction.compile_ahead` compiles a program in a background thread, stored or not: the
training loop starts its train step's compilation as soon as the state's shapes are known, and
imports TensorFlow and loads its state and first batch while XLA compiles.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import hashlib
import os
import pickle
import sys
import tempfile
import threading
import time

import flax
import jax
import jaxlib
import ml_dtypes
import numpy as np
import optax
from absl import logging

from lnl_jax.models import onednn

PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))
_directory: str | None = None
_digest: bytes | None = None


def enable(directory: str | None) -> None:
  """Keeps lowered programs in `directory` from now on (None or '': nowhere). Called once the
  package is imported: its sources are read now, so that what the process traces is keyed as the
  code it imported, whatever happens to the files later."""
  global _directory, _digest
  _directory = os.path.expanduser(directory) if directory else None
  _digest = code_digest() if directory else None


def directory() -> str | None:
  """Where this process keeps lowered programs: None when disabled or when several processes run."""
  return _directory if jax.process_count() == 1 else None


def code_digest(root: str = PACKAGE_ROOT) -> bytes:
  """Digest of the package's sources under `root` and of the versions of Python and of the
  libraries the steps are traced with."""
  h = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(root, '**', '*.py'), recursive=True)):
    with open(path, 'rb') as f:
      _update(h, os.path.relpath(path, root), hashlib.sha256(f.read()).hexdigest())
  _update(h, sys.version, *(f'{m.__name__} {m.__version__}'
                            for m in (jax, jaxlib, flax, optax, np, ml_dtypes)))
  return h.digest()


def _update(h, *parts: str) -> None:
  for part in parts:  # length-prefixed: no two sequences of parts hash alike
    data = part.encode()
    h.update(len(data).to_bytes(8, 'little') + data)


def encode(value) -> str:
  """A canonical text of a setting: primitives, dtypes, tuples, lists, dicts, and dataclasses
  (flax modules among them) field by field. Raises TypeError for anything else (a callable, an
  array), whose text would not tell two values apart."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return f'{type(value).__name__}:{value!r}'
  if isinstance(value, (tuple, list)):
    return f'{type(value).__name__}[' + ','.join(encode(v) for v in value) + ']'
  if isinstance(value, dict):
    return 'dict{' + ','.join(f'{encode(k)}={encode(v)}' for k, v in sorted(value.items())) + '}'
  if isinstance(value, (np.dtype, type)) and _is_dtype(value):
    return f'dtype:{np.dtype(value).name}'
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    fields = [f for f in dataclasses.fields(value) if f.name not in ('parent', 'name')]
    return (f'{type(value).__module__}.{type(value).__qualname__}(' +
            ','.join(f'{f.name}={encode(getattr(value, f.name))}' for f in fields) + ')')
  raise TypeError(f'no canonical encoding of {type(value).__name__} {value!r:.80}')


def _is_dtype(value) -> bool:
  try:
    np.dtype(value)
    return True
  except TypeError:
    return False


def program_key(name: str, settings: tuple, tree, avals, out_shardings) -> str:
  """The file name of a lowered program: the digest of everything that shapes it. Raises
  TypeError if a setting has no canonical encoding."""
  h = hashlib.sha256(_digest or code_digest())
  devices = sorted({(d.platform, d.device_kind) for a in avals for d in a.sharding.device_set})
  _update(h, name, encode(settings), str(tree),
          repr([(a.shape, a.dtype.name, a.weak_type, a.sharding) for a in avals]),
          repr(out_shardings), repr(devices), repr(sorted(jax.config.values.items())))
  return f'{name}-{h.hexdigest()[:32]}'


def _signature(tree, leaves) -> tuple:
  """What selects a `StoredFunction`'s program: the arguments' tree, shapes, dtypes and weak types,
  and JAX's configuration (a change within the process looks the program up again)."""
  return (tree, tuple((x.shape, x.dtype, getattr(x, 'weak_type', False)) for x in leaves),
          _config_state())


def _config_state():
  """JAX's configuration values, cheaply comparable (every step looks its program up with them)."""
  values = tuple(jax.config.values.values())  # in the fixed order the options were defined
  try:
    hash(values)
    return values
  except TypeError:  # an option whose value is unhashable
    return repr(values)


class StoredFunction:
  """`jax.jit(fn, ...)` whose lowered program for each argument signature is read from the store
  directory when it is there and written there when it is not (no directory: `jax.jit`'s own
  programs). `compile_ahead` compiles a signature's program in the background.

  `settings` must hold everything `fn` is bound to (its model, its hyper-parameters): with its
  `name`, the arguments' signature and the code they make the program's key. `in_shardings` is one
  sharding per positional argument, `out_shardings` one for every output.
  """

  def __init__(self, fn, name: str, settings: tuple, store: str | None, *, in_shardings: tuple,
               out_shardings, donate_argnums: tuple[int, ...] = (), compiler_options=None):
    self._fn, self._name, self._settings, self._store = fn, name, settings, store
    self._in_shardings, self._out_shardings = in_shardings, out_shardings
    self._donate_argnums, self._compiler_options = donate_argnums, compiler_options
    self._programs = {}  # argument signature -> (jitted call of the flat program, output tree)
    self._ahead = {}  # argument signature -> Future of its compiled program (`compile_ahead`)
    # jax.jit(fn), for arguments whose program is not stored; made here, not on first use, so
    # that the caller's thread and a background compilation share it.
    self._plain = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                          donate_argnums=donate_argnums, compiler_options=compiler_options)

  def __call__(self, *args):
    leaves, tree, signature = self._flatten(args)
    if signature not in self._programs:
      ahead = self._ahead.pop(signature, None)
      if ahead is None and self._ahead:
        logging.warning('%s: called with arguments other than those it is compiling ahead for; '
                        'compiling a program for these too', self._name)
        self._ahead.clear()  # warned once; a later call with those arguments compiles them
      # An error of the background compilation is raised here, in the caller's thread.
      self._programs[signature] = (ahead.result() if ahead is not None else
                                   self._program(args, leaves, tree))
    call, out_tree = self._programs[signature]
    if out_tree is None:
      return call(*args)
    return jax.tree.unflatten(out_tree, call(*leaves))

  def compile_ahead(self, *args) -> None:
    """Looks up (or traces and lowers) the program for arguments shaped like `args` (pytrees of
    `jax.ShapeDtypeStruct`, or arrays) now, and starts compiling it in a background thread,
    unless it is compiled or started already. The first call with such arguments waits for it
    instead of compiling its own. XLA releases the GIL while it compiles, so the caller meanwhile
    does the rest of its start (imports, data, parameters) on the other cores. Tracing stays in
    the caller's thread: in the background it would only share the GIL with the caller's Python.
    A process that ends before the compilation does waits for it (see `wait_ahead`)."""
    leaves, tree, signature = self._flatten(args)
    if signature in self._programs or signature in self._ahead:
      return
    call, out_tree = self._program(args, leaves, tree)
    lowered = call.lower(*(args if out_tree is None else leaves))
    future = concurrent.futures.Future()

    def compile_program():
      try:
        start = time.perf_counter()
        compiled = lowered.compile()
        logging.info('%s: compiled ahead in %.1f s', self._name, time.perf_counter() - start)
        future.set_result((compiled, out_tree))
      except BaseException as e:  # pylint: disable=broad-except  # the caller's call raises it
        future.set_exception(e)

    self._ahead[signature] = future
    # Not a daemon: Python waits for the thread before it finalizes, since finalizing while XLA
    # compiles in another thread aborts the process (a command ending on an error meanwhile).
    threading.Thread(target=compile_program, name=f'compile {self._name}').start()

  def wait_ahead(self) -> None:
    """Waits until no compilation started by `compile_ahead` is running (their errors are left to
    the calls). A command that ends early calls it while its stop-signal handler is installed,
    so that a signal still ends it at once rather than when Python finalizes."""
    concurrent.futures.wait(list(self._ahead.values()))

  def _flatten(self, args):
    """(leaves, tree, signature) of the positional arguments `args`, whose count is checked."""
    if len(args) != len(self._in_shardings):
      raise TypeError(f'{self._name} takes {len(self._in_shardings)} arguments, got {len(args)}')
    leaves, tree = jax.tree.flatten(args)
    return leaves, tree, _signature(tree, leaves)

  def trace(self, *args):
    """`jax.jit(fn, ...).trace(*args)`: the program as traced here, never stored (for benchmarks)."""
    return self._plain.trace(*args)

  def _program(self, args, leaves, tree):
    if self._store is None:
      return self._plain, None
    shardings, donated = [], []
    for i, (arg, sharding) in enumerate(zip(args, self._in_shardings)):
      for _ in jax.tree.leaves(arg):
        donated.append(i in self._donate_argnums)
        shardings.append(sharding)
    avals = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
             for x, s in zip(leaves, shardings)]
    try:
      path = os.path.join(self._store, program_key(self._name, self._settings, tree, avals,
                                                   self._out_shardings) + '.exported')
      exported, out_tree = _read(path, avals)
      if exported is None:
        exported, out_tree = self._export(tree, shardings, avals)
        _write(path, dict(exported=exported.serialize(), out_tree=out_tree))
      else:
        logging.info('%s: lowered program read from %s', self._name, path)
    except Exception as e:  # pylint: disable=broad-except  # storing is an optimisation only
      logging.warning('%s: not stored (%s: %s); traced as usual', self._name, type(e).__name__, e)
      return self._plain, None
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

    platforms = sorted({d.platform for s in shardings for d in s.device_set})
    # the oneDNN convolutions' FFI calls are kept: the program is read back by processes of this
    # same code (`code_digest`), which register their handlers before compiling it
    stable = [jax.export.DisabledSafetyCheck.custom_call(t) for t in onednn.TARGETS]
    exported = jax.export.export(jax.jit(flat_fn, in_shardings=tuple(shardings),
                                         out_shardings=self._out_shardings),
                                 platforms=platforms, disabled_checks=stable)(*avals)
    return exported, out_trees[-1]


def shapes(fn, name: str, settings: tuple, store: str | None):
  """`fn()`, a pytree of `jax.ShapeDtypeStruct` (a traced function's result shapes), read from the
  store directory when it is kept there and written there when it is not. `settings` must hold
  everything `fn` computes from (its model, the sizes, the optimiser's settings): with `name` and
  the code they make the key. Any failure to key, read or write computes `fn()` as usual."""
  if store is None:
    return fn()
  try:
    path = os.path.join(store, program_key(name, settings, None, [], None) + '.shapes')
    record = _load(path)
    if record is not None:
      leaves = [jax.ShapeDtypeStruct(tuple(shape), jax.numpy.dtype(dtype), weak_type=weak)
                for shape, dtype, weak in record['leaves']]
      out = jax.tree.unflatten(record['tree'], leaves)
      logging.info('%s: shapes read from %s', name, path)
      return out
  except Exception as e:  # pylint: disable=broad-except  # storing is an optimisation only
    logging.warning('%s: shapes not read (%s: %s); traced as usual', name, type(e).__name__, e)
    return fn()
  out = fn()
  try:
    leaves, tree = jax.tree.flatten(out)
    _write(path, dict(tree=tree, leaves=[(x.shape, x.dtype.name, x.weak_type) for x in leaves]))
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('%s: shapes not kept (%s: %s)', name, type(e).__name__, e)
  return out


def _read(path: str, avals):
  """(the Exported, its output tree) kept at `path` if it takes `avals` on their devices, else
  (None, None): there is none, or it is unreadable or unexpected (then lowered and written anew)."""
  try:
    record = _load(path)
    if record is None:
      return None, None
    exported = jax.export.deserialize(bytearray(record['exported']))
    out_tree = record['out_tree']
    devices = len({d for a in avals for d in a.sharding.device_set})
    expected = [(a.shape, a.dtype) for a in avals]
    if ([(a.shape, a.dtype) for a in exported.in_avals] != expected or
        exported.nr_devices != devices or out_tree.num_leaves != len(exported.out_avals)):
      raise ValueError('it takes other arguments or devices than these')
    return exported, out_tree
  except Exception as e:  # pylint: disable=broad-except  # a partial or foreign file: lower again
    logging.warning('lowered program %s unreadable (%s: %s); lowering it again', path,
                    type(e).__name__, e)
    return None, None


def _load(path: str) -> dict | None:
  """The record kept at `path`, or None if there is none."""
  if not os.path.exists(path):
    return None
  with open(path, 'rb') as f:
    return pickle.load(f)


def _write(path: str, record: dict) -> None:
  """Writes the record atomically, unless this package's sources changed since the process read
  them (it would be keyed as the new code). A store that cannot be written is reported, not
  fatal."""
  if _digest is not None and code_digest() != _digest:
    logging.warning('%s not kept: the sources of lnl_jax changed while this process ran', path)
    return
  data = pickle.dumps(record)
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile('wb', dir=os.path.dirname(path), suffix='.tmp',
                                     delete=False) as f:
      tmp = f.name
      f.write(data)
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    logging.warning('could not write %s: %s', path, e)
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
