import atexit
import os
import shutil
import tempfile

# Four simulated CPU devices for the data-parallel tests; the rest of the suite uses device 0 only.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The commands cache compiled programs (lnl_jax.cli); the tests' cache is a directory of their own
# (inherited by the commands they start), removed at exit, never the user's ~/.cache.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lnl_jax_test_jax_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], True)
