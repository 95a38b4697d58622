"""Host-side facts and settings for the processes that run steps: the cores they may use, the C
allocator's reuse of freed memory, and how TensorFlow is imported."""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys

from absl import logging

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def usable_cores() -> int:
  """The cores this process may run on (its affinity where the OS has one, e.g. under Slurm)."""
  if hasattr(os, 'sched_getaffinity'):  # Linux; macOS and Windows have no affinity call
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> tuple[str, str]:
  """The processor's model name and its widest x86 vector extension ('avx512', 'avx2', or '' where
  neither or unknown), read from the first processor of Linux's `cpuinfo`; elsewhere the machine
  type and ''. Benchmark records name both: a virtual machine's model name (e.g. "Intel(R) Xeon(R)
  Processor") does not say which extensions the convolution libraries can use, and their speed
  depends on it."""
  name, isa = '', ''
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and not name:
          name = value.strip()
        elif key.strip() in ('flags', 'Features'):  # x86, ARM
          words = value.split()
          isa = 'avx512' if 'avx512f' in words else 'avx2' if 'avx2' in words else ''
          break
  except OSError:
    pass
  return name or platform.processor() or platform.machine(), isa


def steps_run_on_cpu() -> bool:
  """Whether JAX's default backend will be the CPU, told before JAX starts it: the first platform
  `jax_platforms` ($JAX_PLATFORMS) names where that is set, whatever JAX may fall back to when its
  device is missing; else whether no accelerator is installed: no PJRT plugin (a module of the
  `jax_plugins` namespace package or an entry point of that group, as JAX discovers them), no
  plugin named in $PJRT_NAMES_AND_LIBRARY_PATHS, no `libtpu`. An accelerator installed on a host
  without its device counts as one."""
  import jax  # pylint: disable=import-outside-toplevel  # its import starts no backend
  platforms = jax.config.jax_platforms
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  if (list(importlib.metadata.entry_points(group='jax_plugins'))
      or os.environ.get('PJRT_NAMES_AND_LIBRARY_PATHS') or importlib.util.find_spec('libtpu')):
    return False
  try:
    import jax_plugins  # pylint: disable=import-outside-toplevel
  except ImportError:
    return True
  return not list(pkgutil.iter_modules(jax_plugins.__path__))


def keep_freed_memory() -> bool:
  """Makes glibc serve large buffers from its heap and keep what is freed, instead of mapping
  fresh pages for every buffer over 32 MB and returning them on free: on the main thread, and on
  every thread where the steps run on the CPU (below). Every command that runs the model calls it
  first (`cli.setup_process`), before JAX starts its backend: it holds for the threads whose first
  allocation comes afterwards (a thread keeps the arena it started with).

  XLA's CPU backend allocates a step's temporaries and outputs anew on every call. Fresh pages cost
  a page fault each (the kernel zeroes them), so writing a large array into them is much slower
  than into reused memory. It allocates on its own worker threads, and glibc gives each thread an
  arena of its own, whose large blocks are always freshly mapped: so where the steps run on the
  CPU (`steps_run_on_cpu`), every thread is pointed at the one main arena, the only one whose large
  blocks can come from the heap. One arena also makes the threads that allocate most wait on each
  other (XLA's compilation, tf.data's), so where an accelerator holds the steps' buffers the
  threads keep their arenas. With this the process's peak RSS stays at its high-water mark.
  Returns False where it does nothing (not glibc: macOS, musl) or where glibc refused a setting.
  """
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1)]
  if steps_run_on_cpu():
    settings.append((_M_ARENA_MAX, 1))
  done = [mallopt(param, value) for param, value in settings]
  return all(done)


def import_tensorflow():
  """The `tensorflow` module, for tf.data and TensorBoard's event files, imported without the Keras
  that its `__init__` loads eagerly. The commands import TensorFlow through here.

  TensorFlow imports Keras at once (to register Keras optimizers with SavedModel, which this package
  never loads), and Keras imports matplotlib's pyplot: a large part of a command's start on a small
  host (docs/benchmarks.md). While TensorFlow is imported, `keras` (and the legacy `tf_keras`) are
  marked missing, which its `__init__` tolerates; it then lists no Keras folders on its `__path__`,
  so they are put there afterwards, as it would have. `tf.keras` and `import tensorflow.keras` load
  Keras on first use. TensorFlow is given no GPU, however it was imported (here or by other code,
  such as TFDS): the accelerators are JAX's.
  """
  return _without_gpus(sys.modules.get('tensorflow') or _import_without_keras())


class _TensorFlowOnFirstUse:
  """Stands for the `tensorflow` module, which `import_tensorflow` imports when an attribute is
  first read: a module can name `tf` at its top and still leave the import to its first use."""

  def __getattr__(self, name):
    return getattr(import_tensorflow(), name)


lazy_tensorflow = _TensorFlowOnFirstUse()


def _import_without_keras():
  hidden = [name for name in ('keras', 'tf_keras') if name not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # an import of it raises ImportError
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel
  finally:
    for name in hidden:
      if sys.modules.get(name, 0) is None:
        del sys.modules[name]
  try:
    from tensorflow.python.tools import module_util  # pylint: disable=import-outside-toplevel
  except ImportError:  # another TensorFlow layout: only `import tensorflow.keras` is then missing
    return tensorflow
  legacy = os.environ.get('TF_USE_LEGACY_KERAS') in ('true', 'True', '1')  # as TensorFlow reads it
  folders = [module_util.get_parent_dir_for_name(name) for name in (
      'tf_keras.api._v2.keras' if legacy else 'keras.api._v2.keras', 'keras._tf_keras.keras')]
  tensorflow.__path__ = ([f for f in folders if f is not None] +
                         [p for p in tensorflow.__path__ if p is not None])
  return tensorflow


_gpus_hidden = False


def _without_gpus(tensorflow):
  """`tensorflow`, once it has been told to use no GPU (once per process): the accelerators are
  JAX's, and TensorFlow would otherwise reserve their memory when its runtime starts."""
  global _gpus_hidden
  if not _gpus_hidden:
    _gpus_hidden = True
    try:
      tensorflow.config.set_visible_devices([], 'GPU')
    except RuntimeError as e:  # its runtime started already (other code used TensorFlow first)
      logging.warning('TensorFlow may hold GPU memory: %s', e)
  return tensorflow
