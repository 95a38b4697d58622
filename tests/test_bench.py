"""The benchmark's entry point on a tiny config: its JSON lines parse, carry their keys, and agree
with FLOP counts known independently (2n³ for the matmul ceiling; a train step ≈ 3 forwards)."""
import json
import os
import subprocess
import sys

import pytest

from fixtures import ONEDNN_PLATFORM, run_module
from lnl_jax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# synthetic:smoke with one patch and no attention modules: the network that compiles fastest.
TINY = ['--config=configs/synthetic.py:smoke', '--config.model.num_patches=1',
        '--config.model.attention=none', '--steps=1']


def run_bench(*flags, check=True, env=None):
  # one CPU device, as a user has
  return run_module('lnl_jax.bench', *flags, ok=check, timeout=300, env=env)


def records(proc, what):
  rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
  return [r for r in rows if r['what'] == what]


@pytest.fixture(scope='module')
def bench_run():
  """One run for all line checks: compiling even the tiny train step takes most of a minute here."""
  return run_bench(*TINY, '--ensembles=loop', '--batch=2', '--parts', '--layers', '--pipeline',
                   '--pipeline_images=40', '--pipeline_batches=2')


def test_train_and_eval_lines(bench_run):
  proc = bench_run
  (machine,) = records(proc, 'machine')
  assert machine['backend'] == 'cpu' and machine['devices'] == 1
  assert machine['cpu'] and 'xla_flags' in machine
  assert (machine['cpu'], machine['cpu_isa']) == host.cpu_model()

  rows = records(proc, 'ceiling')
  assert sorted((r['when'], r['op']) for r in rows) == [
      ('end', 'conv3x3'), ('end', 'matmul'), ('start', 'conv3x3'), ('start', 'matmul')]
  ceilings = {r['op']: r for r in rows if r['when'] == 'start'}
  n = ceilings['matmul']['shape'][0]
  # XLA's own count (read through the version-dependent cost_analysis) is the textbook 2n³.
  assert ceilings['matmul']['flops_xla'] == pytest.approx(2 * n ** 3, rel=1e-3)
  b, s, _, cin, cout = ceilings['conv3x3']['shape']
  assert ceilings['conv3x3']['flops_xla'] == pytest.approx(2 * b * s * s * cin * cout * 9, rel=0.05)
  # The yardsticks themselves: the textbook counts over the measured time.
  assert ceilings['matmul']['flops'] == pytest.approx(2 * n ** 3, rel=1e-3)
  assert ceilings['conv3x3']['flops'] == pytest.approx(2 * b * s * s * cin * cout * 9, rel=1e-3)
  for r in ceilings.values():
    assert r['flop_per_s'] == pytest.approx(r['flops'] / r['step_s'], rel=1e-2)

  (train,) = records(proc, 'train_step')
  (evaluation,) = records(proc, 'eval_step')
  for r in (train, evaluation):
    assert (r['ensemble'], r['batch'], r['dtype'], r['num_patches']) == ('loop', 2, 'float32', 1)
    assert (r['image_size'], r['devices']) == (64, 1)
    for key in ('compile_s', 'step_s', 'img_per_s', 'flops', 'flop_per_s', 'frac_of_matmul',
                'frac_of_conv', 'compiled_bytes', 'peak_rss_bytes'):
      assert r[key] > 0, (r['what'], key)
    assert r['img_per_s'] == pytest.approx(2 / r['step_s'], rel=1e-2)
    assert r['page_faults_per_step'] >= 0
    assert r['flops_per_img'] == pytest.approx(r['flops'] / 2, rel=1e-3)
    assert r['flop_per_s'] == pytest.approx(r['flops'] / r['step_s'], rel=1e-2)
    # The fraction of each ceiling measured at the start that the step reaches.
    for op, key in (('matmul', 'frac_of_matmul'), ('conv3x3', 'frac_of_conv')):
      assert r[key] == pytest.approx(r['flop_per_s'] / ceilings[op]['flop_per_s'], rel=1e-2), key
  # Backpropagation costs about two forward passes: train ≈ 3× eval FLOPs per image.
  assert 2.0 < train['flops_per_img'] / evaluation['flops_per_img'] < 4.5
  assert train['raf_schedule_min'] == pytest.approx(12271 * 24 / train['img_per_s'] / 60, rel=1e-2)


def test_the_flops_counted_agree_with_xla_count_of_its_own_kernels(bench_run):
  """Two independent counts: convolutions + matmuls in the jaxpr of the step as the CPU runs it
  (oneDNN's convolutions, which XLA's cost analysis cannot see into) against XLA's count of the
  whole compiled program of the same step on XLA's own kernels."""
  xla = run_bench(*TINY, '--ensembles=loop', '--batch=2', env=dict(LNL_JAX_ONEDNN='0'))
  for what in ('train_step', 'eval_step'):
    (onednn_step,), (xla_step,) = records(bench_run, what), records(xla, what)
    assert onednn_step['flops'] == pytest.approx(xla_step['flops_xla'], rel=0.15), what
    assert onednn_step['flops'] == pytest.approx(xla_step['flops'], rel=1e-3), what
    if ONEDNN_PLATFORM:  # the calls are opaque to XLA's count
      assert onednn_step['flops_xla'] < 0.5 * xla_step['flops_xla'], what


def test_part_lines(bench_run):
  parts = {r['part']: r for r in records(bench_run, 'part')}
  assert set(parts) == {'shared_member_on_Mx_batch', 'ensemble', 'unet', 'network_loss_grad'}
  for r in parts.values():
    assert r['step_s'] > 0 and r['flops'] > 0 and r['frac_of_matmul'] > 0
  shared, ensemble = parts['shared_member_on_Mx_batch'], parts['ensemble']
  assert ensemble['vs_shared'] == pytest.approx(ensemble['step_s'] / shared['step_s'], rel=1e-2)
  # The M members on a batch of B do the same arithmetic as one member on the M·B batch.
  assert ensemble['flops'] == pytest.approx(shared['flops'], rel=0.05)
  # The whole network's loss gradient costs more than its parts and about as much as the train step.
  (train,) = records(bench_run, 'train_step')
  assert parts['network_loss_grad']['flops'] > ensemble['flops'] + parts['unet']['flops']
  assert parts['network_loss_grad']['flops'] == pytest.approx(train['flops'], rel=0.1)


def test_layer_lines(bench_run):
  """One line per distinct convolution, counted against the network's own convolution kernels."""
  import jax
  import jax.numpy as jnp
  from lnl_jax.config_base import dataset_config
  from lnl_jax.models import create_model

  config = dataset_config('synthetic', 'smoke')
  config.model.num_patches, config.model.attention = 1, 'none'
  s = config.data.image_size
  model = create_model(config.model, s, config.data.num_classes)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, s, s, 3)))['params']
  # A Conv kernel is (k, k, C, O) with odd k, with a leading member axis when stacked; the U-Net's
  # 2×2 up-convolutions and the dense layers are not convolutions here.
  kernels = [x.shape for path, x in jax.tree_util.tree_leaves_with_path(params)
             if path[-1].key == 'kernel' and x.ndim >= 4 and x.shape[-4] % 2 == 1]
  calls = sum(shape[0] if len(shape) == 5 else 1 for shape in kernels)

  rows = records(bench_run, 'layer')
  assert sum(r['count'] for r in rows) == calls > 0
  for r in rows:
    b, h, w, c = r['input_shape']
    k, o = r['kernel'], r['features']
    out = (h, w) if r['padding'] == 'SAME' else (h - k + 1, w - k + 1)
    assert r['positions'] == b * out[0] * out[1]
    # forward + the two gradients, 2·positions·k²·C·O each
    assert r['flops'] == pytest.approx(3 * 2 * r['positions'] * k * k * c * o, rel=1e-3)
    # a CPU run, with oneDNN where its wheels are
    assert r['chosen'] in (('onednn' if ONEDNN_PLATFORM else 'conv'), 'matmul')
    for lowering in ('xla', 'conv', 'matmul') + (('onednn',) if ONEDNN_PLATFORM else ()):
      assert r[f'{lowering}_ms'] > 0 and r[f'{lowering}_flop_per_s'] > 0
      # milliseconds: the same arithmetic in every lowering, over its FLOP/s, × 1000
      assert r[f'{lowering}_ms'] == pytest.approx(1e3 * r['flops'] / r[f'{lowering}_flop_per_s'],
                                                  rel=0.02), lowering


def test_pipeline_lines(bench_run):
  rows = {r['source']: r for r in records(bench_run, 'pipeline')}
  assert set(rows) == {'rafdb_jpeg_fixture', 'synthetic_in_memory'}
  (train,) = records(bench_run, 'train_step')
  for r in rows.values():
    assert (r['num_images'], r['image_size'], r['batch']) == (40, 64, 16)  # smoke: 64 px, batch 16
    assert r['img_per_s'] > 0
    assert r['vs_train_step'] == pytest.approx(r['img_per_s'] / train['img_per_s'], rel=1e-2)


def test_bad_flags_are_named():
  proc = run_bench(*TINY, '--ensembles=grouped', check=False)
  assert proc.returncode != 0 and '--ensembles' in proc.stderr and 'grouped' in proc.stderr


def test_dense_flops_counts_known_programs():
  import jax
  import jax.numpy as jnp
  from lnl_jax.bench import dense_flops

  count = lambda f, *shapes: dense_flops(jax.make_jaxpr(f)(*(jnp.zeros(s) for s in shapes)))
  assert count(jnp.matmul, (8, 16), (16, 4)) == 2 * 8 * 16 * 4
  # lax.map lowers to a scan: its body counts once per member (XLA's cost analysis counts it once).
  assert count(lambda w, x: jax.lax.map(lambda a: a[0] @ a[1], (w, x)),
               (16, 32, 32), (16, 32, 32)) == 16 * 2 * 32 ** 3
  grouped = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=4)
  forward = 2 * (2 * 8 * 8 * 32) * (3 * 3 * 4)  # output elements × window × input features per group
  assert count(grouped, (2, 8, 8, 16), (3, 3, 4, 32)) == forward
  # Backpropagation through a convolution: two more convolutions of the same size.
  loss = lambda x, k: jnp.sum(grouped(x, k))
  assert count(jax.value_and_grad(loss, argnums=(0, 1)), (2, 8, 8, 16), (3, 3, 4, 32)) == 3 * forward
  # oneDNN's convolution and its two gradients (FFI calls), vmapped over 3 members: each counts
  # as the convolution it computes, 2 × output elements × window × input features.
  from lnl_jax.models import onednn
  member = 2 * (2 * 6 * 6 * 5) * (3 * 3 * 4)  # 'valid' 3×3 on 8×8: 6×6 outputs
  loss = lambda x, k: jnp.sum(jnp.sin(onednn.conv2d(x, k, 0)))
  both = jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)))
  assert count(both, (3, 2, 8, 8, 4), (3, 3, 3, 4, 5)) == 3 * 3 * member
  # cond: the costlier branch only (two matmuls, not the other's one).
  branchy = lambda x, w: jax.lax.cond(x[0, 0] > 0, lambda: x @ w, lambda: x @ w @ w)
  assert count(branchy, (8, 8), (8, 8)) == 2 * 2 * 8 ** 3


def test_compiled_bytes_counts_a_donated_buffer_once():
  """`compiled_bytes` is arguments + outputs + temporaries − aliased buffers: doubling 1000 float32
  (4000 bytes) takes 4000 + 4000 bytes, or 4000 when the input is donated and the output written
  into it."""
  import jax
  import jax.numpy as jnp
  from lnl_jax.bench import compiled_bytes

  x = jnp.zeros((1000,), jnp.float32)
  assert compiled_bytes(jax.jit(lambda v: v * 2).lower(x).compile()) == 8000
  assert compiled_bytes(jax.jit(lambda v: v * 2, donate_argnums=0).lower(x).compile()) == 4000


def test_step_time_is_the_median_per_call(monkeypatch):
  """`step_s` is the median over the timed samples of a sample's seconds over its `inner` calls,
  and `compile_s` the time to the compiled program. Timed on a stand-in clock that reads 0, 10,
  then 10, 30 | 30, 34 | 34, 42 around three samples of 4 calls: 5, 1 and 2 s per call, median 2."""
  import types

  import jax
  import jax.numpy as jnp
  from lnl_jax import bench

  readings = iter([0.0, 10.0, 10.0, 30.0, 30.0, 34.0, 34.0, 42.0])
  monkeypatch.setattr(bench, 'time', types.SimpleNamespace(perf_counter=lambda: next(readings)))
  t = bench.time_jitted(jax.jit(lambda v: v + 1), (jnp.zeros(3),), 3, inner=4)
  assert (t.compile_s, t.step_s) == (10.0, 2.0)
  assert next(readings, None) is None  # every reading was used


def test_peak_rss_is_in_bytes():
  """`peak_rss_bytes` is the process's peak resident memory in bytes: the kernel's VmHWM (given in
  kB, that is KiB) × 1024, up to the kernel's approximate page counters (0.5 % here; KiB × 1000
  would be 2.3 % short). It may be more: the peak of the process before an exec counts too, where
  VmHWM is of the present image only."""
  from lnl_jax.bench import memory_fields

  with open('/proc/self/status') as f:
    peak_kib = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
  got = memory_fields()['peak_rss_bytes']
  assert got >= 0.995 * peak_kib * 1024


def test_batch_sizes_below_one_are_refused():
  proc = run_bench(*TINY, '--batch=2,0', check=False)
  assert proc.returncode != 0 and '--batch=2,0: batch sizes must be ≥ 1' in proc.stderr


def test_import_pulls_in_no_tensorflow():
  """The benchmark runs where TensorFlow is not installed: only --pipeline may import it."""
  code = ('import sys, lnl_jax.bench; '
          'bad = [m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules]; '
          'assert not bad, bad')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


CPUINFO = {
    # Two processors of a virtual Xeon: the first one's name and extensions.
    'xeon': ('processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx '
             'avx2 fma avx512f avx512bw\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) '
             'Processor\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n',
             ('Intel(R) Xeon(R) Processor', 'avx512')),
    'epyc': ('processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n',
             ('AMD EPYC', 'avx2')),
    'avx512 names that are not avx512f': (
        'model name\t: Some CPU\nflags\t\t: avx avx512_vnni avx512vl\n', ('Some CPU', '')),
    # ARM: no model name, its extensions under 'Features', none of them x86's.
    'arm': ('processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\n', (None, '')),
}


@pytest.mark.parametrize('kind', sorted(CPUINFO))
def test_cpu_model_reads_the_first_processor(kind, tmp_path):
  """The machine line's `cpu` and `cpu_isa`: the model name and the widest of AVX-512 (avx512f,
  its foundation) and AVX2 that the first processor lists; without a model name, the machine type
  (never an empty name); without a cpuinfo file, the same."""
  text, (name, isa) = CPUINFO[kind]
  path = tmp_path / 'cpuinfo'
  path.write_text(text)
  got_name, got_isa = host.cpu_model(str(path))
  assert got_isa == isa
  assert got_name == (name or host.platform.processor() or host.platform.machine()) and got_name
  missing_name, missing_isa = host.cpu_model(str(tmp_path / 'missing'))
  assert missing_name and missing_isa == ''


def test_usable_cores_are_those_the_process_may_run_on():
  """Under an affinity mask (taskset, a Slurm allocation) the cores counted are the mask's, not
  all the machine's."""
  allowed = os.sched_getaffinity(0)
  try:
    os.sched_setaffinity(0, {min(allowed)})
    assert host.usable_cores() == 1
  finally:
    os.sched_setaffinity(0, allowed)
  assert host.usable_cores() == len(allowed)


REUSE = '''
import resource, sys
from lnl_jax import host
if sys.argv[1] == 'keep':
  assert host.keep_freed_memory()
import jax, jax.numpy as jnp
# A 144 MB temporary each call (the matrix product's operand), allocated on XLA's threads.
f = jax.jit(lambda x: (jnp.outer(x, x) + 1.0) @ x)
x = jnp.ones(6000)
for _ in range(25):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


@pytest.mark.skipif(sys.platform != 'linux' or host.platform.libc_ver()[0] != 'glibc',
                    reason="keep_freed_memory sets glibc's malloc; elsewhere it does nothing")
def test_keep_freed_memory_reuses_the_pages_of_freed_buffers():
  """After `host.keep_freed_memory`, a jitted function whose temporary is larger than glibc's mmap
  threshold writes it into reused memory once the heap has grown to hold it: most calls take no
  page fault. Without it, every call faults on the fresh mapping glibc makes for it on the thread
  XLA allocates it from (one fault per page, or fewer where the kernel backs it with huge pages).
  The heap settles after a few calls, and a call now and then may still grow it."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('MALLOC_') and k != 'GLIBC_TUNABLES'}  # glibc's own defaults
  faults = {}
  for mode in ('keep', 'default'):
    proc = subprocess.run([sys.executable, '-c', REUSE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(env, JAX_PLATFORMS='cpu'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    faults[mode] = [int(n) for n in proc.stdout.split()][10:]  # the heap has settled
  assert min(faults['default']) > 0, faults
  assert sum(faults['keep']) < 0.4 * sum(faults['default']), faults


def _installed_accelerator() -> bool:
  """Whether this environment has a JAX plugin or libtpu of its own (then no case can show what
  `steps_run_on_cpu` says without one)."""
  import importlib.metadata
  import importlib.util
  return bool(list(importlib.metadata.entry_points(group='jax_plugins'))
              or importlib.util.find_spec('jax_plugins') or importlib.util.find_spec('libtpu')
              or os.environ.get('PJRT_NAMES_AND_LIBRARY_PATHS'))


@pytest.mark.parametrize('platforms, plugin, on_cpu', [
    ('cpu', None, True), ('cpu,cuda', None, True), ('cuda', None, False),
    ('cuda,cpu', None, False), ('', None, True), ('', 'module', False),
    ('', 'entry_point', False), ('cpu', 'module', True)])
def test_steps_run_on_cpu_follows_jax_platforms_then_the_installed_plugins(
    platforms, plugin, on_cpu, tmp_path):
  """`host.steps_run_on_cpu` (whether `keep_freed_memory` takes glibc to one arena): the first
  platform $JAX_PLATFORMS names where it is set (even 'cuda' on a host without one, where JAX would
  fall back to the CPU); else whether no JAX plugin is installed: here none, or one written for the
  test as a module of JAX's `jax_plugins` namespace package or as a distribution advertising the
  `jax_plugins` entry point. JAX would load it when it starts its backend; the subprocess never
  starts one."""
  if not platforms and not plugin and _installed_accelerator():
    pytest.skip('this environment has an accelerator plugin of its own')
  if plugin == 'module':
    (tmp_path / 'jax_plugins').mkdir()
    (tmp_path / 'jax_plugins' / 'test_accelerator.py').write_text('def initialize():\n  pass\n')
  elif plugin == 'entry_point':
    info = tmp_path / 'test_accelerator-0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: test-accelerator\nVersion: 0\n')
    (info / 'entry_points.txt').write_text('[jax_plugins]\ntest_accelerator = test_accelerator\n')
  path = [str(tmp_path), os.environ.get('PYTHONPATH', '')]
  env = dict(os.environ, JAX_PLATFORMS=platforms, PYTHONPATH=os.pathsep.join(filter(None, path)))
  proc = subprocess.run([sys.executable, '-c', 'from lnl_jax import host; '
                         'print(host.steps_run_on_cpu())'], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == str(on_cpu), proc.stdout
