import atexit
import os
import shutil
import tempfile

import pytest

from fixtures import QUICK_COMPILE

# Four simulated CPU devices for the data-parallel tests (the rest of the suite uses device 0 only),
# and XLA's optimisation level 0: most of the suite's time is compilation, which level 0 shortens,
# while the tests' programs run a few steps at most (fixtures.command_env for the commands).
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=4 {QUICK_COMPILE}')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The commands cache compiled programs (lnl_jax.cli); the tests' cache is a directory of their own
# (inherited by the commands they start), removed at exit, never the user's ~/.cache.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lnl_jax_test_jax_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], True)
if 'LNL_JAX_DATA_CACHE' not in os.environ:  # the same for the synthetic faces the commands draw
  os.environ['LNL_JAX_DATA_CACHE'] = tempfile.mkdtemp(prefix='lnl_jax_test_faces_')
  atexit.register(shutil.rmtree, os.environ['LNL_JAX_DATA_CACHE'], True)

from processes import Main  # noqa: E402  (imports JAX: after the environment above)


# Test files whose end-to-end tests take longest, longest first. pytest-xdist (pyproject.toml) hands
# whole files to its workers in collection order, two each to begin with, then the next file to
# whichever worker is free: the long files start first, and the short ones fill the gaps at the end.
# Files not named keep their order, after these.
LONGEST_FILES = ('test_learning.py', 'test_train.py', 'test_experiments.py', 'test_multiprocess.py',
                 'test_preemption.py', 'test_evidence.py', 'test_predict.py', 'test_bench.py',
                 'test_launch.py', 'test_old_workdir.py', 'test_bad_inputs.py', 'test_model.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))


def _utf8(text: str) -> str:
  return text.encode('utf-8', 'backslashreplace').decode('utf-8')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """A report a pytest-xdist worker can send (execnet sends UTF-8 only): a file name the OS gave as
  undecodable bytes (PEP 383 surrogates, which the bad-input tests create) is written with
  backslash escapes, in the captured output and in a failure's text."""
  report = (yield).get_result()
  report.sections = [(title, _utf8(text)) for title, text in report.sections]
  if report.failed and _utf8(text := str(report.longrepr)) != text:
    report.longrepr = _utf8(text)


@pytest.fixture
def launch():
  """`launch(log_path, *command, ...)` starts a `Main`; any still running when the test ends (a
  failed assertion mid-way) is killed."""
  started = []

  def start(*args, **kw) -> Main:
    started.append(Main(*args, **kw))
    return started[-1]
  yield start
  for main in started:
    if main.proc.poll() is None:
      main.proc.kill()
      main.proc.wait()
