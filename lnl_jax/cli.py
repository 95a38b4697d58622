"""What every command-line tool shares: the common flags, the process set-up, and how errors end it.

Errors the user can fix end the process with one line on stderr, never a traceback:
  1    ConfigError, DataError (the message names the field or file), FloatingPointError (the step);
       a flag absl refuses, a config file that does not load, an override naming no config field
  143  SIGTERM (130: SIGINT) arrived; a checkpoint of the current step was written, rerun to resume

Commands that run the model keep XLA's compiled programs in JAX's persistent compilation cache, so
that a rerun (a resumed run, an evaluation, a prediction) skips most of the compilation; they keep
their lowered steps there too, so that a rerun skips tracing them (`program_store`).
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lnl_jax import host, program_store
from lnl_jax.errors import ConfigError, DataError, Preempted

FLAGS = flags.FLAGS
CHECKPOINT_HELP = "'latest' (default), 'best' (highest test accuracy) or a step number."
# Programs that compile faster than this are not kept in the cache: each would cost a file for
# little. The programs a run compiles before its first step, the optimiser's initialisation
# included, take longer on CPU.
CACHE_MIN_COMPILE_SECS = 0.2

flags.DEFINE_string(
    'compilation_cache', None, 'Directory of JAX\'s persistent compilation cache; \'\' disables '
    'it. Default: $JAX_COMPILATION_CACHE_DIR if set, else $XDG_CACHE_HOME/lnl_jax/jax_cache '
    '(~/.cache/lnl_jax/jax_cache).')
flags.DEFINE_string(
    'data_cache', None, 'Directory keeping generated synthetic faces, so that a rerun reads them '
    'instead of drawing them again; \'\' disables it. Default: '
    '$LNL_JAX_DATA_CACHE if set, else $XDG_CACHE_HOME/lnl_jax/synthetic_faces.')


def _calling_module() -> str:
  """The name absl files the flags of the module calling into this one under (the main module's:
  sys.argv[0]), for `--help` to list them with that module's own."""
  frame = sys._getframe(1)
  while frame.f_globals.get('__name__') == __name__:
    frame = frame.f_back
  name = frame.f_globals.get('__name__')
  return sys.argv[0] if name == '__main__' else name


def define_once(define, name: str, *args, **kwargs) -> None:
  """`define(name, *args, **kwargs)` unless a flag `name` exists: tools imported into one process
  (the tests) share a flag of the same name and meaning. Either way the flag is one of the calling
  tool's own for `--help`."""
  if name not in FLAGS:
    define(name, *args, **kwargs)
  FLAGS.register_key_flag_for_module(_calling_module(), FLAGS[name])


def uses_cache_flags(data: bool = True) -> None:
  """Files --compilation_cache (and, with `data`, --data_cache) under the calling tool for
  `--help`: the tools that run the model read them."""
  for name in ('compilation_cache',) + (('data_cache',) if data else ()):
    FLAGS.register_key_flag_for_module(_calling_module(), FLAGS[name])


def define_workdir_flags(checkpoint: bool = True,
                         workdir_help: str = 'A directory written by lnl_jax.main.') -> None:
  """--workdir and, with `checkpoint`, --checkpoint=latest|best|STEP. Defined once per process, so
  that tools imported together (by the tests) share them; each tool marks its required flags when
  run as a program."""
  define_once(flags.DEFINE_string, 'workdir', None, workdir_help)
  if checkpoint:
    define_once(flags.DEFINE_string, 'checkpoint', 'latest', CHECKPOINT_HELP)


def define_data_root_flag() -> None:
  """--data_root=DIR: the dataset's folder, when it has moved since the run read it (once per
  process)."""
  define_once(flags.DEFINE_string, 'data_root', None,
              "The dataset's folder, if not where the run read it (its config.json's data.root).")


def define_config_flag() -> None:
  """--config=configs/x.py[:variant], with --config.field=value overrides (once per process)."""
  define_once(config_flags.DEFINE_config_file, 'config', None,
              'Experiment config (configs/*.py[:variant]).', lock_config=True)


def _cache_root() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'lnl_jax')


def default_cache_dir() -> str:
  return os.path.join(_cache_root(), 'jax_cache')


def data_cache_dir(flag_value: str | None) -> str | None:
  """Where generated synthetic faces are kept (None = nowhere): the flag, else
  $LNL_JAX_DATA_CACHE, else a folder beside the compilation cache."""
  value = flag_value
  if value is None:
    value = os.environ.get('LNL_JAX_DATA_CACHE', os.path.join(_cache_root(), 'synthetic_faces'))
  return os.path.expanduser(value) if value else None


def compilation_cache_dir(flag_value: str | None) -> str:
  """The cache directory to use ('' = none): the flag, else $JAX_COMPILATION_CACHE_DIR, else the
  default."""
  if flag_value is not None:
    return flag_value
  return os.environ.get('JAX_COMPILATION_CACHE_DIR', default_cache_dir())


def enable_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache in `directory` ('' = none), and the lowered steps in its
  folder `lowered` (`program_store`)."""
  program_store.enable(os.path.join(directory, 'lowered') if directory else None)
  if not directory:
    jax.config.update('jax_enable_compilation_cache', False)
    return
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(directory))
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:  # else JAX has read it
    jax.config.update('jax_persistent_cache_min_compile_time_secs', CACHE_MIN_COMPILE_SECS)


def setup_process() -> None:
  """What every command that runs the model does first, before JAX starts its backend."""
  host.keep_freed_memory()
  logging.get_absl_handler().python_handler.addFilter(  # Orbax logs every file it writes at INFO
      lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname)
  enable_compilation_cache(compilation_cache_dir(FLAGS.compilation_cache))


def fail(message: str) -> None:
  """Ends the process with `error: message` on one line of stderr and exit status 1."""
  print(f'error: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
  sys.exit(1)


def run(main) -> None:
  """`app.run(main)` for every command of the project: a mistake in its flags or arguments ends it
  with one line (`parse_flags`; a `app.UsageError` from `main`), as does one in its config or data
  (`run_or_exit`), and `--help` lists the flags it takes from shared modules (`define_once`) with
  its own."""

  def main_or_fail(argv):
    try:
      return run_or_exit(main, argv)
    except app.UsageError as e:
      fail(str(e))

  app.run(main_or_fail, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, ending the process with `error: ...` on one line where absl would print
  a traceback or a multi-line report: a misspelt or missing flag, a config file that does not load
  (missing, failing, or refusing the variant), an override naming no config field."""
  try:
    parsed = FLAGS(argv)
    if 'config' in FLAGS and FLAGS['config'].value is not None:
      FLAGS.config.get('data')  # a config file that failed to load raises here
  except flags.Error as e:  # a config file's own error comes with its traceback: keep the last line
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    fail(f'{lines[0]} {lines[-1]}' if 'Traceback' in str(e) else ' '.join(lines))
  except Exception as e:  # pylint: disable=broad-except  # loading the config file, or overriding
    fail(_config_error(argv, e))
  return parsed


def _config_error(argv: list[str], e: Exception) -> str:
  """One line for an error ml_collections raised loading --config or applying its overrides."""
  config_arg = next((a for a in argv if a.startswith('--config=')), '--config')
  config_file = os.path.abspath(config_arg.partition('=')[2].split(':')[0])
  if isinstance(e, SyntaxError) and e.filename:
    return f'{config_arg} does not load: {e.filename}:{e.lineno}: SyntaxError: {e.msg}'
  in_file = [f for f in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(f.filename) == config_file]
  # ml_collections' missing-field errors hold "'name'\nDid you mean ...?", nested in KeyError.
  detail = e.args[0] if e.args else e
  name, *hint = str(detail.args[0] if isinstance(detail, Exception) and detail.args
                    else detail).splitlines() or ['']
  if in_file:  # raised by the config file's own code
    return (f'{config_arg} does not load: {in_file[-1].filename}:{in_file[-1].lineno}: '
            f'{type(e).__name__}: {" ".join([name, *hint])}')
  if isinstance(e, (AttributeError, KeyError)) and any(a.startswith('--config.') for a in argv):
    return f'a --config.… override names no field of the config: {name}. {" ".join(hint)}'
  lines = str(e).strip().splitlines() or [type(e).__name__]
  return f'{config_arg} does not load: {lines[-1].strip()}'


def run_or_exit(run_fn, *args):
  """`run_fn(*args)`, ending the process on errors the user can fix: one line on stderr and exit
  status 1, or 128 + signal after a pre-emption (rerun the same command to resume)."""
  try:
    return run_fn(*args)
  except Preempted as e:
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)
  except (ConfigError, DataError, FloatingPointError) as e:
    fail(str(e))
