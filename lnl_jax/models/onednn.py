"""The 'onednn' lowering of `conv2d` (models/conv.py): oneDNN's CPU convolutions through XLA's FFI.

oneDNN is the library behind PyTorch's CPU convolutions. Its forward, input-gradient and
kernel-gradient convolutions run the network's layers faster than the kernels XLA's CPU backend
uses for them (docs/benchmarks.md), so a model for one CPU device takes this lowering wherever
`available()` (`conv.lowering_for`).

`onednn_conv.cc` (beside this file) holds three XLA FFI handlers, one per convolution. It is
compiled once, on first use, with the system's C++ compiler ($CXX, else g++ or c++), against the
FFI headers jaxlib ships and the oneDNN of the `onednn-cpu-gomp` and `onednn-devel-cpu-gomp`
wheels (dependencies on Linux x86-64), into $LNL_JAX_ONEDNN_DIR, else
$XDG_CACHE_HOME/lnl_jax/onednn (~/.cache/lnl_jax/onednn), one library per source, jaxlib version
and build command (which names this environment's oneDNN); then loaded with ctypes and registered
under `TARGETS`. Where that cannot be done (another platform, no
compiler, no wheels), `available()` is False and says why in one warning, and the CPU keeps XLA's
own kernels. LNL_JAX_ONEDNN=0 turns the lowering off.

Under `jax.vmap` each call gets the batch axis on every argument ('broadcast_all'); the handlers
run one convolution per member on consecutive slices, never a grouped convolution.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import tempfile

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'onednn_conv.cc')
LIBRARY_WHEEL, HEADER_WHEEL = 'onednn-cpu-gomp', 'onednn-devel-cpu-gomp'
BUILD_TIMEOUT_S = 300
# FFI target name -> the handler's symbol in onednn_conv.cc
TARGETS = {'lnl_jax_conv_forward': 'LnlConvForward',
           'lnl_jax_conv_backward_data': 'LnlConvBackwardData',
           'lnl_jax_conv_backward_weights': 'LnlConvBackwardWeights'}


class Unavailable(Exception):
  """Why the oneDNN lowering cannot run in this process."""


def build_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.environ.get('LNL_JAX_ONEDNN_DIR') or os.path.join(base, 'lnl_jax', 'onednn')


def _wheel_file(dist: str, name: str) -> str:
  """The installed file of wheel `dist` whose path ends in `name`."""
  try:
    files = importlib.metadata.files(dist) or []
  except importlib.metadata.PackageNotFoundError:
    raise Unavailable(f'the {dist} wheel is not installed') from None
  for f in files:
    if str(f).replace(os.sep, '/').endswith('/' + name):
      return os.path.normpath(str(f.locate()))
  raise Unavailable(f'the {dist} wheel has no {name}')


def _compiler() -> list[str]:
  cxx = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
  if not cxx:
    raise Unavailable('no C++ compiler ($CXX, g++ or c++) to build onednn_conv.cc')
  return shlex.split(cxx)  # $CXX may hold arguments ('ccache g++')


def build() -> str:
  """The path of the compiled handlers, compiling them if this command (source, compiler, the
  installed oneDNN and jaxlib's headers, by path) has not been run before: the library is linked
  to the oneDNN of this environment, so each environment builds its own. Written under another
  name, then renamed: processes that build at once do not see each other's half-written file."""
  library = _wheel_file(LIBRARY_WHEEL, 'libdnnl.so.3')
  include = os.path.dirname(_wheel_file(HEADER_WHEEL, 'include/dnnl.hpp'))
  with open(SOURCE, 'rb') as f:
    source = f.read()
  command = [*_compiler(), '-O2', '-std=c++17', '-shared', '-fPIC', '-w', '-I', include,
             '-I', jax.ffi.include_dir(), SOURCE, library,
             f'-Wl,-rpath,{os.path.dirname(library)}']
  key = hashlib.sha256(b'\0'.join(
      [source, jax.lib.__version__.encode(), importlib.metadata.version(LIBRARY_WHEEL).encode(),
       *(word.encode() for word in command)])).hexdigest()[:16]
  out = os.path.join(build_dir(), f'onednn_conv-{key}.so')
  if os.path.exists(out):
    return out
  try:
    os.makedirs(build_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so.tmp', dir=build_dir())
    os.close(fd)
  except OSError as e:
    raise Unavailable(f'cannot write the handlers to {build_dir()}: {e}') from None
  try:
    done = subprocess.run([*command, '-o', tmp], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    if done.returncode:
      tail = ' | '.join(done.stderr.strip().splitlines()[-3:])
      raise Unavailable(f'{command[0]} failed on {SOURCE} (exit {done.returncode}): {tail}')
    os.replace(tmp, out)
  except OSError as e:
    raise Unavailable(f'{command[0]} did not start: {e}') from None
  except subprocess.TimeoutExpired:
    raise Unavailable(f'{command[0]} took over {BUILD_TIMEOUT_S} s on {SOURCE}') from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return out


def _register() -> None:
  if os.environ.get('LNL_JAX_ONEDNN', '1') == '0':
    raise Unavailable('LNL_JAX_ONEDNN=0')
  try:
    library = ctypes.cdll.LoadLibrary(build())
  except OSError as e:
    raise Unavailable(f'the compiled handlers did not load: {e}') from None
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')


def require() -> None:
  """Registers the handlers, or raises ValueError where they cannot run in this process."""
  if not available():
    raise ValueError("oneDNN's convolutions are unavailable in this process (the warning above "
                     'says why).')


@functools.cache
def available() -> bool:
  """Whether the oneDNN lowering runs in this process (built and registered on the first call)."""
  try:
    _register()
  except Unavailable as e:
    logging.warning('oneDNN convolutions unavailable (%s); the CPU runs XLA\'s own.', e)
    return False
  return True


def _call(target: str, shape: tuple, a: jax.Array, b: jax.Array, pad: int) -> jax.Array:
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method='broadcast_all')(a, b, pad=np.int64(pad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, kernel: jax.Array, pad: int) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2)` in NHWC/HWIO, float32, for
  a square kernel; its gradients are oneDNN's backward-data and backward-weights convolutions."""
  b, h, w, _ = x.shape
  k, o = kernel.shape[0], kernel.shape[-1]
  return _call('lnl_jax_conv_forward', (b, h + 2 * pad - k + 1, w + 2 * pad - k + 1, o), x, kernel,
               pad)


def _forward(x, kernel, pad):
  return conv2d(x, kernel, pad), (x, kernel)


def _backward(pad, residuals, dy):
  x, kernel = residuals
  return (_call('lnl_jax_conv_backward_data', x.shape, dy, kernel, pad),
          _call('lnl_jax_conv_backward_weights', kernel.shape, x, dy, pad))


conv2d.defvjp(_forward, _backward)
