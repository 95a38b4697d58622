"""The benchmark anyone can rerun: step speed, FLOPs against measured ceilings, memory.

  python -m lnl_jax.bench --config=configs/raf.py [--config.model.width=0.5] [--batch=2,8]
      [--steps=3] [--ensembles=loop,vmap,scan] [--dtypes=float32,bfloat16] [--parts] [--layers]
      [--pipeline]

Needs no dataset: the steps run on random uint8 images of the config's shape. Prints one JSON line
per measurement (`what` says which), in this order:

  machine     versions, backend, device kind and count, processor, XLA_FLAGS and the compile
              options of the steps on this backend (what the ceilings, parts and layers get too),
              the command line
  ceiling     XLA's FLOP/s on this device for a large matmul and a large 3×3 convolution, per dtype:
              the yardsticks the steps are divided by (`frac_of_matmul`, `frac_of_conv`); measured
              again at the end (`when`), so a machine shared with other work shows as a difference
  train_step  per dtype × batch × ensemble execution: compile time, median step time after a
              warm-up step, `img_per_s`, the step's FLOPs (counted from its jaxpr, below), achieved
              FLOP/s, memory, and the paper's RAF-DB schedule (12,271 images × 24 epochs) at this speed
  eval_step   the same for the forward pass of evaluation (unless --noeval)
  part        with --parts: forward + backward of the 16 SimpleNets + local attention alone per
              execution, of one shared member network on the M× batch (`vs_shared`: the
              members' time ÷ the shared network's), of the U-Net alone, and of the whole
              network's loss without the optimiser (train_step − network_loss_grad ≈ the update)
  layer       with --layers: each distinct convolution of the network alone (input shape, kernel,
              features, `count` = how often it occurs), forward + both gradients, timed in every
              lowering of models/conv.py (`xla_ms`, `conv_ms`, `matmul_ms` and their FLOP/s);
              `chosen` is the lowering the model built for this backend gives it
  pipeline    with --pipeline: tf.data images/s alone on a RAF-DB-format JPEG fixture and on
              in-memory synthetic faces (TensorFlow is imported only then)

FLOPs: `flops` is 2 × the multiply-adds of every convolution and matrix product in the step's
jaxpr (scan bodies × their length): ~141 GFLOP per image per train step of the full model. It
depends on how each convolution is lowered (models/conv.py), so it differs slightly between
backends and ensemble executions. XLA's own cost
analysis of the compiled program is reported beside it as `flops_xla`, but is no substitute: it
counts a while loop's body once (the 'scan' execution: ~M× too low) and, on GPU, nothing inside
the cuDNN/cuBLAS custom calls the convolutions and matmuls become (~100× too low).
Memory: `compiled_bytes` is the step's own arguments + outputs + temporaries (XLA's memory
analysis; of the train step, the larger of its two programs', the gradient step's counting the
optimiser's state it leaves in memory); `peak_rss_bytes` (host) and `peak_device_bytes`
(accelerators) are process-wide peaks so far, so only the first measurement of a process is its
own peak. `page_faults_per_step` (steps and parts): the process's minor page faults per timed
step, mostly fresh memory the step wrote into (on CPU, until `host.keep_freed_memory`'s heap has
grown to hold the step's buffers).
`compile_s` times real compilations: the persistent compilation cache is on only where
--compilation_cache=DIR or $JAX_COMPILATION_CACHE_DIR names one, never in the other commands'
default directory.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from typing import Callable

from absl import app, flags
import flax
import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from lnl_jax import cli, host, steps as steps_lib
from lnl_jax.models import conv as conv_lib, create_model, num_params, onednn
from lnl_jax.models.ensemble import EXECUTIONS, PatchEnsemble, PatchNetwork
from lnl_jax.models.layers import draw_params, scaled
from lnl_jax.models.lnlattennet import DTYPES
from lnl_jax.models.unet import UNet

RAF_TRAIN_IMAGES, RAF_EPOCHS = 12_271, 24  # the paper's RAF-DB schedule (Sec. IV-A)
RAF_FIXTURE_SIDE = 100  # RAF-DB's aligned faces are 100×100 JPEGs

FLAGS = flags.FLAGS
cli.define_config_flag()
cli.uses_cache_flags(data=False)
flags.DEFINE_list('batch', ['2'], 'Global batch size(s) to measure, e.g. 2 or 64,256.')
flags.DEFINE_integer('steps', 3, 'Timed steps per measurement, after one warm-up step; the median '
                     'is reported.')
flags.DEFINE_list('ensembles', [], f'Ensemble executions to measure, from {EXECUTIONS}; default: '
                  'the config\'s.')
flags.DEFINE_list('dtypes', [], f'Compute dtypes to measure, from {tuple(DTYPES)}; default: the '
                  'config\'s.')
flags.DEFINE_bool('train', True, 'Measure the full train step.')
flags.DEFINE_bool('eval', True, 'Measure the eval step too.')
flags.DEFINE_bool('parts', False, 'Measure the ensemble, one shared member network, the U-Net and '
                  'the loss gradient alone.')
flags.DEFINE_bool('layers', False, 'Measure every distinct convolution of the network alone, '
                  'forward + backward, in each lowering of models/conv.py.')
flags.DEFINE_bool('pipeline', False, 'Measure the tf.data input pipeline alone (imports '
                  'TensorFlow).')
flags.DEFINE_integer('pipeline_images', 300, 'Images in the RAF-DB fixture and the synthetic set.')
flags.DEFINE_integer('pipeline_batches', 20, 'Batches timed per pipeline measurement.')


# --- Measuring one jitted function ------------------------------------------------------------

@dataclasses.dataclass
class Timing:
  compile_s: float  # trace + lower + XLA compile
  step_s: float  # median seconds per call after a warm-up call
  flops: float  # dense FLOPs of one call, from the jaxpr (`dense_flops`)
  flops_xla: float | None  # XLA's cost analysis of the compiled program(s), summed
  # arguments + outputs + temporaries − aliased (donated) buffers; of a `TrainStep`, the larger of
  # its two programs' (the gradient step's with the optimiser's state, which it does not take)
  compiled_bytes: int | None
  page_faults: float  # the process's minor page faults per call while timed (`time_jitted`)


def dense_flops(jaxpr) -> int:
  """2 × multiply-adds of every dot_general and conv_general_dilated in a (closed) jaxpr.

  Sub-jaxprs (jit, remat, custom derivatives, scan, cond) are included; a scan body counts
  `length` times, a cond its costliest branch, a while body once. Each output element of a
  convolution costs (kernel window × kernel input features) multiply-adds whatever its padding,
  dilation or groups; of a dot_general, the product of its contracting dimensions.
  """
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2 * out * math.prod(lhs[d] for d in contracting)
    elif name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      _, in_features, *window = eqn.params['dimension_numbers'].rhs_spec
      total += 2 * out * rhs[in_features] * math.prod(rhs[d] for d in window)
    elif name == 'ffi_call' and eqn.params['target_name'] in onednn.TARGETS:
      total += _onednn_flops(eqn.params['target_name'], eqn)
    subs = [dense_flops(j) for j in _sub_jaxprs(eqn.params.values())]
    if name == 'cond':
      total += max(subs, default=0)
    else:
      total += eqn.params.get('length', 1) * sum(subs) if name == 'scan' else sum(subs)
  return total


def _onednn_flops(target: str, eqn) -> int:
  """A oneDNN convolution's or gradient's multiply-adds × 2: each element of the forward output
  (..., N, Ho, Wo, O) costs k·k·C, whichever of the three it is (models/onednn.py)."""
  shapes = [v.aval.shape for v in eqn.invars] + [eqn.outvars[0].aval.shape]
  y, kernel = {'lnl_jax_conv_forward': (shapes[2], shapes[1]),
               'lnl_jax_conv_backward_data': (shapes[0], shapes[1]),
               'lnl_jax_conv_backward_weights': (shapes[1], shapes[2])}[target]
  return 2 * math.prod(y) * math.prod(kernel[-4:-1])


def _sub_jaxprs(values):
  for v in values:
    if isinstance(v, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
      yield v
    elif isinstance(v, (tuple, list)):
      yield from _sub_jaxprs(v)


def xla_flops(compiled) -> float | None:
  """'flops' of a compiled program's cost analysis (None if XLA gives none)."""
  try:
    flops = (compiled.cost_analysis() or {}).get('flops')  # None where XLA gives no analysis
  except (NotImplementedError, RuntimeError):  # not every backend has it; the step is still timed
    return None
  return float(flops) if flops and flops > 0 else None


def compiled_bytes(compiled) -> int | None:
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except (NotImplementedError, RuntimeError, AttributeError):  # None, or not on this backend
    return None


def time_jitted(jitted, args: tuple, num_steps: int, *, feed: Callable | None = None,
                inner: int = 1) -> Timing:
  """Compiles `jitted` (a jit-compiled function or a `steps.TrainStep`) for `args`, runs it once,
  then times `num_steps` samples of `inner` calls.

  `feed(args, out)` gives the next call's arguments (the train step's donated state is replaced by
  the one it returns); by default the arguments are reused. Every sample ends in block_until_ready.
  """
  feed = feed or (lambda a, out: a)
  start = time.perf_counter()
  traced = jitted.trace(*args)
  if isinstance(jitted, steps_lib.TrainStep):  # two programs
    programs = [t.lower().compile() for t in traced]
    compiled = functools.partial(steps_lib.TrainStep.run, *programs)
  else:
    traced, programs = [traced], [traced.lower().compile()]
    compiled = programs[0]
  compile_s = time.perf_counter() - start
  out = compiled(*args)
  jax.block_until_ready(out)
  args = feed(args, out)
  times = []
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(max(1, num_steps)):
    start = time.perf_counter()
    for _ in range(inner):
      out = compiled(*args)
      args = feed(args, out)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / inner)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (len(times) * inner)
  flops_xla = [xla_flops(p) for p in programs]
  sizes = [compiled_bytes(p) for p in programs]
  if len(programs) == 2:  # the optimiser's state stays in memory while the gradient step runs
    sizes[0] = sizes[0] and sizes[0] + sum(x.nbytes for x in jax.tree.leaves(args[0].opt_state))
  flops = float(sum(dense_flops(t.jaxpr) for t in traced))
  return Timing(compile_s, float(np.median(times)), flops,
                None if None in flops_xla else sum(flops_xla),
                None if None in sizes else max(sizes), faults)


def memory_fields() -> dict:
  rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  fields = dict(peak_rss_bytes=rss_kib * 1024)
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    fields['peak_device_bytes'] = int(stats['peak_bytes_in_use'])
  return fields


def on_accelerator() -> bool:
  return jax.default_backend() in ('gpu', 'tpu')


@functools.cache
def compiler_options() -> dict | None:
  """The XLA options the model's programs get on this backend (`steps.compiler_options`)."""
  return steps_lib.compiler_options(steps_lib.Parallel().mesh)


def jit(fn, **kwargs):
  """`jax.jit` with `compiler_options()`: what is timed alone runs in the kernels the step runs
  in."""
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


# --- Ceilings ---------------------------------------------------------------------------------

def ceilings(dtype_names, num_steps: int, when: str = 'start') -> dict[tuple[str, str], float]:
  """FLOP/s of a large matmul and a large 3×3 'same' convolution in XLA, per dtype name.

  CPU: f32-sized problems that run in ~0.1 s (2048² matmul; 8×72×72×64 → 64 conv). Accelerators:
  8192³ matmul and a 128×72×72×256 → 256 conv, each timed over 10 back-to-back calls.
  """
  big = on_accelerator()
  n = 8192 if big else 2048
  b, s, cin, cout = (128, 72, 256, 256) if big else (8, 72, 64, 64)
  inner = 10 if big else 1
  results = {}
  for name in dtype_names:
    dtype = DTYPES[name]
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    w = jax.random.normal(key_b, (n, n), dtype)
    t = time_jitted(jit(jnp.matmul), (a, w), max(num_steps, 3), inner=inner)
    flops = 2.0 * n ** 3
    results[name, 'matmul'] = flops / t.step_s
    emit(what='ceiling', when=when, op='matmul', dtype=name, shape=[n, n, n], flops=flops,
         step_s=t.step_s, flop_per_s=flops / t.step_s, flops_xla=t.flops_xla)
    x = jax.random.normal(key_a, (b, s, s, cin), dtype)
    k = jax.random.normal(key_b, (3, 3, cin, cout), dtype)
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding='SAME',
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    t = time_jitted(jit(conv), (x, k), max(num_steps, 3), inner=inner)
    flops = 2.0 * b * s * s * cin * cout * 9
    results[name, 'conv'] = flops / t.step_s
    emit(what='ceiling', when=when, op='conv3x3', dtype=name, shape=[b, s, s, cin, cout],
         flops=flops, step_s=t.step_s, flop_per_s=flops / t.step_s, flops_xla=t.flops_xla)
  return results


def against_ceilings(flop_per_s: float | None, dtype: str, ceiling: dict) -> dict:
  if flop_per_s is None:
    return {}
  return {f'frac_of_{op}': flop_per_s / ceiling[dtype, op]
          for op in ('matmul', 'conv') if (dtype, op) in ceiling}


# --- The train and eval steps -----------------------------------------------------------------

def with_model(config, *, dtype: str, ensemble: str):
  c = copy.deepcopy(config)
  c.model.dtype, c.model.ensemble = dtype, ensemble
  return c


def bench_steps(config, batch_size: int, num_steps: int, ceiling: dict, do_train: bool,
                do_eval: bool) -> float | None:
  """Train and eval step of the full model; returns the train step's images/s."""
  image_size, num_classes = config.data.image_size, config.data.num_classes
  par = steps_lib.Parallel()
  par.check_batch_size(batch_size)
  model = create_model(config.model, image_size, num_classes)
  steps_per_epoch = max(1, RAF_TRAIN_IMAGES // batch_size)
  tx = steps_lib.create_optimizer(config.train, steps_per_epoch)
  init = lambda: par.init_state(model, image_size, tx, config.seed)
  state = init()
  batch = par.put_batch(steps_lib.random_batch(np.random.default_rng(0), batch_size, image_size,
                                                num_classes))
  context = dict(config=config.name, image_size=image_size, width=config.model.width,
                 num_patches=config.model.num_patches, dtype=config.model.dtype,
                 ensemble=config.model.ensemble, batch=batch_size, devices=jax.device_count(),
                 num_params=num_params(state.params))

  train_img_per_s = None
  if do_train:
    # The state is donated: each call gets the state the previous one returned.
    t = time_jitted(par.jit_train_step(model, config.train, steps_per_epoch), (state, batch),
                    num_steps, feed=lambda args, out: (out[0],) + args[1:])
    train_img_per_s = batch_size / t.step_s
    emit_step('train_step', context, t, ceiling, raf_schedule_min=RAF_TRAIN_IMAGES * RAF_EPOCHS / train_img_per_s / 60)
  if do_eval:
    params = init().params if do_train else state.params  # the train step donated `state`
    t = time_jitted(par.jit_eval_step(model), (params, batch), num_steps)
    emit_step('eval_step', context, t, ceiling)
  return train_img_per_s


def emit_step(what: str, context: dict, t: Timing, ceiling: dict, **extra):
  flop_per_s = t.flops / t.step_s
  emit(what=what, **context, compile_s=t.compile_s, step_s=t.step_s,
       img_per_s=context['batch'] / t.step_s, flops=t.flops, flops_xla=t.flops_xla,
       flops_per_img=t.flops / context['batch'], flop_per_s=flop_per_s,
       **against_ceilings(flop_per_s, context['dtype'], ceiling),
       compiled_bytes=t.compiled_bytes, page_faults_per_step=t.page_faults, **memory_fields(),
       **extra)


# --- Parts of the network alone ---------------------------------------------------------------

def sum_of_outputs(module: nn.Module, params, x) -> jax.Array:
  """A loss for one part alone: the gradient of Σ outputs w.r.t. params and input is a training
  step's arithmetic for that part (its input gradient flows on to the layers below)."""
  outputs = module.apply({'params': params}, x)
  return sum(jnp.sum(y.astype(jnp.float32)) for y in jax.tree.leaves(outputs))


def bench_parts(config, batch_size: int, executions, num_steps: int, ceiling: dict):
  """Forward + backward of parts alone: the local ensemble per execution against one shared member
  network on the M× batch, the U-Net, and the whole network's loss without the optimiser update."""
  c, dtype = config.model, DTYPES[config.model.dtype]
  s, num_classes = config.data.image_size, config.data.num_classes
  model = create_model(c, s, num_classes)
  m, p, ch = c.num_patches, model.geometry.patch_size, scaled(64, c.width)
  context = dict(config=config.name, image_size=s, width=c.width, num_patches=m,
                 dtype=c.dtype, batch=batch_size)
  valid = model.geometry.local_attention_valid
  ensemble = lambda e: PatchEnsemble(m, c.width, True, valid, e, dtype, model.lowering)

  def measure(part, module, x, *, loss=sum_of_outputs, argnums=(0, 1), init_input=None,
              reference: Timing | None = None, **extra):
    init_input = x if init_input is None else init_input
    abstract = jax.eval_shape(lambda k: module.init(k, init_input)['params'], jax.random.key(0))
    params = jax.device_put(draw_params(abstract, 'xavier', seed=0))
    grad_step = jit(jax.value_and_grad(functools.partial(loss, module), argnums=argnums))
    t = time_jitted(grad_step, (params, x), num_steps)
    if reference is not None:
      extra['vs_shared'] = t.step_s / reference.step_s
    flop_per_s = t.flops / t.step_s
    emit(what='part', part=part, **context, compile_s=t.compile_s, step_s=t.step_s,
         img_per_s=batch_size / t.step_s, flops=t.flops, flops_xla=t.flops_xla,
         flop_per_s=flop_per_s, **against_ceilings(flop_per_s, c.dtype, ceiling),
         compiled_bytes=t.compiled_bytes, page_faults_per_step=t.page_faults, **memory_fields(),
         **extra)
    return t

  x = lambda shape: jax.random.normal(jax.random.key(1), shape, dtype)
  shared = measure('shared_member_on_Mx_batch',
                   PatchNetwork(c.width, True, valid, dtype, model.lowering),
                   x((m * batch_size, p, p, ch)), shape=[m * batch_size, p, p, ch])
  for e in executions:
    measure('ensemble', ensemble(e), x((m, batch_size, p, p, ch)), shape=[m, batch_size, p, p, ch],
            reference=shared, ensemble=e)
  measure('unet', UNet(c.width, dtype, model.lowering), x((batch_size, s, s, 3)),
          shape=[batch_size, s, s, 3])

  def model_loss(mod, params, batch):
    return steps_lib.loss_fn(params, batch, model=mod, weight_decay=config.train.weight_decay,
                             label_smoothing=config.train.label_smoothing)[0]
  batch = jax.device_put(steps_lib.random_batch(np.random.default_rng(0), batch_size, s,
                                                 num_classes))
  measure('network_loss_grad', model, batch, loss=model_loss, argnums=0,
          init_input=jnp.zeros((1, s, s, 3), jnp.float32), ensemble=c.ensemble)


# --- Convolution layers, per lowering ---------------------------------------------------------

def conv_layers(config, batch_size: int) -> collections.Counter:
  """(input shape, kernel size, features, padding) of every `Conv` call in one forward pass of the
  model at `batch_size`, with how often each occurs (per member: the 'loop' ensemble traces each
  member's convolutions once per member)."""
  s = config.data.image_size
  model = create_model(config.model, s, config.data.num_classes).clone(ensemble='loop')
  seen = collections.Counter()

  def record(next_fun, args, kwargs, context):
    # (the ensemble traces a member's init inside apply to check its parameters' shapes: skipped)
    if (isinstance(context.module, conv_lib.Conv) and context.method_name == '__call__'
        and not context.module.is_initializing()):
      m = context.module
      seen[tuple(args[0].shape), m.kernel_size, m.features, m.padding] += 1
    return next_fun(*args, **kwargs)

  x = jax.ShapeDtypeStruct((batch_size, s, s, 3), jnp.float32)
  params = jax.eval_shape(lambda k, x: model.init(k, x)['params'], jax.random.key(0), x)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda p, x: model.apply({'params': p}, x), params, x)
  return seen


def bench_layers(config, batch_size: int, num_steps: int):
  """Forward + backward (both gradients) of each distinct convolution alone, in every lowering;
  `chosen` is the one the model's `lowering` gives it on this backend, outside a while loop."""
  dtype = DTYPES[config.model.dtype]
  policy = create_model(config.model, config.data.image_size, config.data.num_classes).lowering
  for (shape, k, features, padding), count in sorted(conv_layers(config, batch_size).items()):
    b, h, w, c = shape
    pad = k // 2 if padding == 'SAME' else 0
    positions = b * (h + 2 * pad - k + 1) * (w + 2 * pad - k + 1)
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape, dtype)
    kernel = jax.random.normal(kk, (k, k, c, features), dtype) / math.sqrt(k * k * c)
    row = {}
    for lowering in conv_lib.LOWERINGS:
      if lowering == 'onednn' and not (dtype == jnp.float32 and onednn.available()):
        continue
      loss = lambda x, w, lowering=lowering: jnp.sum(
          jnp.square(conv_lib.conv2d(x, w, pad, lowering).astype(jnp.float32)))
      t = time_jitted(jit(jax.grad(loss, argnums=(0, 1))), (x, kernel), num_steps)
      row[f'{lowering}_ms'] = t.step_s * 1e3
      row[f'{lowering}_flop_per_s'] = t.flops / t.step_s
    chosen = policy(shape, kernel.shape, pad, dtype)
    emit(what='layer', config=config.name, dtype=config.model.dtype, input_shape=list(shape),
         kernel=k, features=features, padding=padding, count=count, positions=positions,
         flops=t.flops, chosen=chosen, **row)


# --- The input pipeline alone -----------------------------------------------------------------

def write_rafdb_fixture(root: str, faces: np.ndarray) -> None:
  """RAF-DB basic's layout: Image/aligned/train_NNNNN_aligned.jpg (100×100) + EmoLabel list."""
  from PIL import Image
  folder = os.path.join(root, 'Image', 'aligned')
  os.makedirs(folder)
  os.makedirs(os.path.join(root, 'EmoLabel'))
  lines = []
  for i, face in enumerate(faces, 1):
    image = Image.fromarray(face).resize((RAF_FIXTURE_SIDE, RAF_FIXTURE_SIDE), Image.BILINEAR)
    image.save(os.path.join(folder, f'train_{i:05d}_aligned.jpg'), quality=95)
    lines.append(f'train_{i:05d}.jpg {1 + i % 7}\n')
  with open(os.path.join(root, 'EmoLabel', 'list_patition_label.txt'), 'w') as f:
    f.writelines(lines)


def bench_pipeline(config, num_images: int, num_batches: int, train_img_per_s: float | None):
  """Train-mode tf.data images/s alone: RAF-DB-format JPEGs on disk, then synthetic faces in
  memory."""
  # Only here is a pipeline built, which imports TensorFlow: the rest runs without it installed.
  from lnl_jax.data import pipeline, readers_wild, synthetic

  image_size, batch_size = config.data.image_size, config.train.batch_size
  faces = synthetic.generate(num_images, image_size, num_patches=config.model.num_patches,
                             overlap=config.model.overlap)
  with tempfile.TemporaryDirectory() as root:
    write_rafdb_fixture(root, faces.images)
    sources = [('rafdb_jpeg_fixture', readers_wild.read_rafdb(root, 'train')),
               ('synthetic_in_memory', faces)]
    for source, records in sources:
      img_per_s = pipeline.measure_throughput(records, batch_size, image_size, num_batches)
      emit(what='pipeline', source=source, config=config.name, image_size=image_size,
           batch=batch_size, num_images=len(records), img_per_s=img_per_s,
           vs_train_step=img_per_s / train_img_per_s if train_img_per_s else None,
           **memory_fields())


# --- Output and entry point -------------------------------------------------------------------

def _round(v):
  if isinstance(v, float):
    return float(f'{v:.4g}')
  if isinstance(v, (list, tuple)):
    return [_round(x) for x in v]
  return v


def emit(**record):
  print(json.dumps({k: _round(v) for k, v in record.items()}), flush=True)


def machine_record() -> dict:
  device = jax.devices()[0]
  cpu, isa = host.cpu_model()
  return dict(what='machine', backend=jax.default_backend(), device_kind=device.device_kind,
              devices=jax.device_count(), cpu=cpu, cpu_isa=isa, cpu_count=os.cpu_count(),
              xla_flags=os.environ.get('XLA_FLAGS', ''), compiler_options=compiler_options(),
              python=platform.python_version(), jax=jax.__version__,
              jaxlib=importlib.metadata.version('jaxlib'),
              flax=flax.__version__, argv=' '.join(sys.argv))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  host.keep_freed_memory()
  cli.enable_compilation_cache(FLAGS.compilation_cache if FLAGS.compilation_cache is not None
                               else os.environ.get('JAX_COMPILATION_CACHE_DIR', ''))
  config = FLAGS.config
  executions = FLAGS.ensembles or [config.model.ensemble]
  dtypes = FLAGS.dtypes or [config.model.dtype]
  for name, values, known in (('ensembles', executions, EXECUTIONS),
                              ('dtypes', dtypes, tuple(DTYPES))):
    if bad := [v for v in values if v not in known]:
      raise app.UsageError(f'--{name}: {bad} not in {known}')
  try:
    batches = [int(b) for b in FLAGS.batch]
  except ValueError:
    raise app.UsageError(f'--batch={",".join(FLAGS.batch)}: expected comma-separated '
                         'integers') from None
  if any(b < 1 for b in batches):
    raise app.UsageError(f'--batch={",".join(FLAGS.batch)}: batch sizes must be ≥ 1')

  # A bad config ends the command here, before anything is timed.
  create_model(config.model, config.data.image_size, config.data.num_classes)
  emit(**machine_record())
  ceiling_dtypes = sorted(set(dtypes) | ({'bfloat16'} if on_accelerator() else set()))
  ceiling = ceilings(ceiling_dtypes, FLAGS.steps)
  best = None
  for dtype in dtypes:
    for batch_size in batches:
      for execution in executions:
        c = with_model(config, dtype=dtype, ensemble=execution)
        if FLAGS.train or FLAGS.eval:
          img_per_s = bench_steps(c, batch_size, FLAGS.steps, ceiling, FLAGS.train, FLAGS.eval)
          best = max(filter(None, (best, img_per_s)), default=None)
      if FLAGS.parts:
        bench_parts(with_model(config, dtype=dtype, ensemble=executions[0]), batch_size, executions,
                    FLAGS.steps, ceiling)
      if FLAGS.layers:
        bench_layers(with_model(config, dtype=dtype, ensemble=executions[0]), batch_size,
                     FLAGS.steps)
  if FLAGS.pipeline:
    bench_pipeline(config, FLAGS.pipeline_images, FLAGS.pipeline_batches, best)
  ceilings(ceiling_dtypes, FLAGS.steps, when='end')  # differs from 'start' on a shared machine


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  cli.run(main)
