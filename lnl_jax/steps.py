"""The pure, jit-compiled pieces of training: state, optimiser, loss (Eq. 3–4), train and eval steps."""
from __future__ import annotations

import functools
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lnl_jax import program_store
from lnl_jax.errors import ConfigError
from lnl_jax.models.conv import lowering_for
from lnl_jax.models.layers import draw_params


def normalize(images):
  """uint8 pixels → float32 in [-1, 1] (x/255 − 0.5)/0.5, on device: the host sends uint8."""
  return (jnp.asarray(images, jnp.float32) / 255.0 - 0.5) / 0.5


def random_batch(rng: np.random.Generator, batch_size: int, image_size: int,
                 num_classes: int) -> dict:
  """A step's batch as the input pipeline delivers it (uint8 faces, labels, one-hot soft labels,
  mask), drawn at random: what the benchmarks time the steps on."""
  label = rng.integers(0, num_classes, batch_size).astype(np.int32)
  return dict(image=rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
              label=label, soft_label=np.eye(num_classes, dtype=np.float32)[label],
              mask=np.ones(batch_size, bool))


def batch_shapes(batch_size: int, image_size: int, num_classes: int) -> dict:
  """The shapes and dtypes of a step's global batch: those of `random_batch` and of the input
  pipeline's fields that `Parallel.put_batch` sends."""
  return dict(image=jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), np.uint8),
              label=jax.ShapeDtypeStruct((batch_size,), np.int32),
              soft_label=jax.ShapeDtypeStruct((batch_size, num_classes), np.float32),
              mask=jax.ShapeDtypeStruct((batch_size,), np.bool_))


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def create_learning_rate_fn(train: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Sec. IV-A: 3e-4, multiplied by 0.95 at the end of every epoch."""
  return _schedule(train.learning_rate, train.lr_decay, steps_per_epoch)


def create_optimizer(train: ml_collections.ConfigDict, steps_per_epoch: int):
  """Adam (the paper names no optimiser; Adam is the usual choice for this recipe). Equal settings
  give the same object, the one `Parallel.jit_train_step` steps with, so that the state's shapes
  and the optimiser's compiled init are reused within a process."""
  return _adam(*optimizer_settings(train, steps_per_epoch))


def optimizer_settings(train: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple:
  """What `create_optimizer` builds Adam from: (learning rate, decay, steps per epoch)."""
  return (train.learning_rate, train.lr_decay, steps_per_epoch)


def _schedule(learning_rate: float, lr_decay: float, steps_per_epoch: int) -> optax.Schedule:
  return optax.exponential_decay(learning_rate, transition_steps=steps_per_epoch,
                                 decay_rate=lr_decay, staircase=True)


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float, lr_decay: float, steps_per_epoch: int):
  return optax.adam(_schedule(learning_rate, lr_decay, steps_per_epoch))


@functools.lru_cache(maxsize=8)
def abstract_state(model: nn.Module, image_size: int, tx) -> TrainState:
  """The TrainState's shapes and dtypes: `Module.init` and the optimiser traced, nothing computed
  (kept for the same arguments: the trace takes seconds)."""
  def build():
    params = model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return jax.eval_shape(build)


def stored_abstract_state(model: nn.Module, image_size: int, train: ml_collections.ConfigDict,
                          steps_per_epoch: int, store: str | None) -> TrainState:
  """`abstract_state` with the optimiser of `create_optimizer(train, steps_per_epoch)`, kept in the
  `store` directory for later processes (`program_store.shapes`)."""
  optimizer = optimizer_settings(train, steps_per_epoch)
  return program_store.shapes(lambda: abstract_state(model, image_size, _adam(*optimizer)),
                              'abstract_state', (model, image_size, optimizer), store)


def l2_penalty(params) -> jax.Array:
  """‖W‖² of Eq. (3) over every kernel (biases are not weights and are left out)."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(jnp.sum(jnp.square(x)) for path, x in leaves if path[-1].key == 'kernel')


def l2_gradient(grads, params, weight_decay: float):
  """`grads` plus the gradient of λ‖W‖², 2λW, on every kernel."""
  return jax.tree_util.tree_map_with_path(
      lambda path, g, w: g + 2 * weight_decay * w if path[-1].key == 'kernel' else g,
      grads, params)


def cross_entropy(params, batch, *, model, label_smoothing):
  """Eq. (4): the masked mean cross-entropy (soft labels where the data has votes), and logits."""
  logits, aux = model.apply({'params': params}, normalize(batch['image']))
  labels = optax.smooth_labels(batch['soft_label'], label_smoothing) if label_smoothing else batch['soft_label']
  mask = batch['mask'].astype(jnp.float32)
  ce = jnp.sum(optax.softmax_cross_entropy(logits, labels) * mask) / jnp.maximum(mask.sum(), 1.0)
  return ce, logits


def loss_fn(params, batch, *, model, weight_decay, label_smoothing):
  """Eq. (3)–(4): masked mean cross-entropy + λ‖W‖²."""
  ce, logits = cross_entropy(params, batch, model=model, label_smoothing=label_smoothing)
  return ce + weight_decay * l2_penalty(params), (ce, logits)


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def gradient_step(params, batch, *, model, weight_decay: float, label_smoothing: float):
  """The first half of a train step: the cross-entropy's gradient on the global batch, whether the
  loss of Eq. 3 (λ = `weight_decay`) and that gradient are finite, and the step's metrics (a
  non-finite step is reported as `nonfinite`, for the loop to act on). The penalty's gradient,
  2λW, is added by `update_step` in its one pass over the parameters (`l2_gradient`): here it
  would be another pass over every kernel's gradient."""
  grad_fn = jax.value_and_grad(
      functools.partial(cross_entropy, model=model, label_smoothing=label_smoothing),
      has_aux=True)
  (ce, logits), grads = grad_fn(params, batch)
  loss = ce + weight_decay * l2_penalty(params)
  finite = jnp.isfinite(loss) & all_finite(grads)
  mask = batch['mask']
  metrics = dict(loss=loss, cross_entropy=ce, nonfinite=~finite,
                 correct=jnp.sum((jnp.argmax(logits, -1) == batch['label']) & mask),
                 count=jnp.sum(mask))
  return grads, finite, metrics


def update_step(state: TrainState, grads, finite, *, tx, weight_decay: float) -> TrainState:
  """The second half: one Adam step on the gradient of Eq. 3, `grads` (the cross-entropy's) plus
  2λW, when `finite`; otherwise the state is left unchanged (the update is skipped) but for its
  step count."""

  def update(state):
    updates, opt_state = tx.update(l2_gradient(grads, state.params, weight_decay),
                                   state.opt_state, state.params)
    return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state)

  # A cond, not a select per leaf: the update stays one fused pass over the state, where a `where`
  # on every leaf would keep extra copies of the state alive (docs/benchmarks.md).
  return jax.lax.cond(finite, update, lambda s: s.replace(step=s.step + 1), state)


def eval_step(params, batch, *, model):
  """Predictions and the attention weights of one batch (wᵍ, wˡ for the figures)."""
  logits, aux = model.apply({'params': params}, normalize(batch['image']))
  return dict(prediction=jnp.argmax(logits, -1), probs=jax.nn.softmax(logits),
              w_global=aux['w_global'], w_local=aux['w_local'])


# XLA options of the programs on CPU but the update step. LLVM's optimisation level 1 and XLA's
# older CPU emitters compile them in less time than XLA's defaults. The update step, elementwise
# passes over the parameters and the Adam moments, keeps XLA's defaults: the older emitters make
# slower code of it. The effect of each option on the step time is in docs/benchmarks.md. An
# option named in $XLA_FLAGS is left to it, and one this jaxlib does not know is left out.
CPU_COMPILER_OPTIONS = dict(xla_backend_optimization_level=1, xla_cpu_use_fusion_emitters=False)
# One more where XLA's kernels run the convolutions (no oneDNN: `conv.lowering_for`):
# YNNPACK, the library XLA's CPU backend hands convolutions, matrix products and reductions to by
# default, keeps the single matrix products only, so that the convolutions go to XLA's own Eigen
# kernels, which compute the gradient of a 3×3 kernel faster than YNNPACK's. Where oneDNN runs the
# convolutions it is left out: the reductions it takes from YNNPACK (the L2 penalty's sums of
# squares over the kernels) run several times slower in XLA's own code.
XLA_CONVOLUTION_OPTIONS = dict(
    xla_cpu_experimental_ynn_fusion_type='LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')


def cpu_compiler_options(devices: int) -> dict:
  """The options of the programs on CPU (but the update step) of models built for `devices`
  devices: CPU_COMPILER_OPTIONS, with XLA_CONVOLUTION_OPTIONS where their convolutions are XLA's
  (`conv.lowering_for` does not give oneDNN's)."""
  if lowering_for('cpu', devices).rule == 'onednn':
    return dict(CPU_COMPILER_OPTIONS)
  return {**CPU_COMPILER_OPTIONS, **XLA_CONVOLUTION_OPTIONS}


def _rejected(options: dict) -> str | None:
  """None when a one-operation CPU program compiles with `options`, else the compiler's words on
  the option or value it does not take; any other failure is raised."""
  x = jax.device_put(np.float32(0), jax.local_devices(backend='cpu')[0])
  try:
    jax.jit(lambda x: x + 1).lower(x).compile(compiler_options=options)
  except jax.errors.JaxRuntimeError as e:
    if 'No such compile option' in str(e) or 'While setting option ' in str(e):
      return str(e)
    raise
  return None


@functools.cache
def known_option(name: str, value) -> bool:
  """Whether this jaxlib's CPU compiler takes the option `name=value` (experimental options come
  and go between versions); one it does not take is logged."""
  rejected = _rejected({name: value})
  if rejected:
    logging.warning('This jaxlib does not take the CPU compile option %s=%r; compiling without '
                    'it: %s', name, value, rejected)
  return rejected is None


@functools.cache
def _known_items(items: tuple) -> tuple:
  if _rejected(dict(items)) is None:  # the usual case: one probe for all of them
    return items
  return tuple((name, value) for name, value in items if known_option(name, value))


def known_options(options: dict) -> dict:
  """The options of `options` that this jaxlib's CPU compiler takes (`known_option`)."""
  return dict(_known_items(tuple(options.items())))


# XLA's default value of each CPU option above, as XLA_FLAGS spells it
# ('+individual_dot' adds to YNNPACK's default fusion types one they already hold).
XLA_DEFAULT_VALUES = dict(xla_backend_optimization_level='3', xla_cpu_use_fusion_emitters='true',
                          xla_cpu_experimental_ynn_fusion_type='+individual_dot')


def xla_default_flags() -> str:
  """XLA_FLAGS that give every program XLA's defaults: each option of CPU_COMPILER_OPTIONS and
  XLA_CONVOLUTION_OPTIONS that this jaxlib knows, named with XLA's default value (XLA stops at a
  flag it does not know)."""
  return ' '.join(f'--{name}={XLA_DEFAULT_VALUES[name]}' for name in known_options(
      {**CPU_COMPILER_OPTIONS, **XLA_CONVOLUTION_OPTIONS}))


def compiler_options(mesh: Mesh) -> dict | None:
  """The XLA options of programs on `mesh`'s devices: on CPU, `cpu_compiler_options` for models
  built for every device (as `create_model` builds them)."""
  if mesh.devices.flat[0].platform != 'cpu':
    return None
  named = {word.split('=')[0].lstrip('-') for word in os.environ.get('XLA_FLAGS', '').split()}
  options = known_options(cpu_compiler_options(jax.device_count()))
  return {k: v for k, v in options.items() if k not in named} or None


def bind_steps(model, tx, weight_decay: float, label_smoothing: float) -> tuple:
  """`gradient_step` and `update_step` with their model, optimiser and loss settings bound:
  (params, batch) -> (grads, finite, metrics) and (state, grads, finite) -> state, to be jitted."""
  return (functools.partial(gradient_step, model=model, weight_decay=weight_decay,
                            label_smoothing=label_smoothing),
          functools.partial(update_step, tx=tx, weight_decay=weight_decay))


def _jit(fn, name: str, settings: tuple, store: str | None, **jit_args):
  """`jax.jit(fn, **jit_args)` that can compile ahead (`program_store.StoredFunction`), and with a
  store directory keeps its lowered programs there: `settings` is everything `fn` is bound to."""
  return program_store.StoredFunction(fn, name, settings, store, **jit_args)


class TrainStep:
  """One Adam step on the global batch, `(state, batch) -> (state, metrics)`: `gradient_step`
  then `update_step`, each its own jit-compiled `program_store.StoredFunction`, so that each gets
  the XLA options that suit it (`CPU_COMPILER_OPTIONS`). The state is donated."""

  def __init__(self, gradient: program_store.StoredFunction,
               update: program_store.StoredFunction):
    self.gradient, self.update = gradient, update

  def __call__(self, state: TrainState, batch):
    return self.run(self.gradient, self.update, state, batch)

  @staticmethod
  def update_arguments(state):
    """The update step's arguments after the gradient step on `state` (the state, a gradient of
    the parameters' shapes, the finite flag), as shapes."""
    like = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                          weak_type=getattr(x, 'weak_type', False))
    return (jax.tree.map(like, state), jax.tree.map(like, state.params),
            jax.ShapeDtypeStruct((), jnp.bool_))

  @staticmethod
  def run(gradient, update, state: TrainState, batch):
    """The step with these callables as its two programs (the compiled ones, in benchmarks)."""
    grads, finite, metrics = gradient(state.params, batch)
    return update(state, grads, finite), metrics

  def compile_ahead(self, state, batch) -> None:
    """`StoredFunction.compile_ahead` of both programs, for a state and a batch shaped like
    these."""
    self.gradient.compile_ahead(state.params, batch)
    self.update.compile_ahead(*self.update_arguments(state))

  def wait_ahead(self) -> None:
    self.gradient.wait_ahead()
    self.update.wait_ahead()

  def trace(self, state, batch) -> tuple:
    """Both programs as traced here (`StoredFunction.trace`), for benchmarks."""
    return (self.gradient.trace(state.params, batch),
            self.update.trace(*self.update_arguments(state)))


# One jitted function per mesh and arguments (the newest few kept): a later run of the process with
# the same ones reuses its traced and compiled programs.
@functools.lru_cache(maxsize=4)
def _jit_train_step(mesh: Mesh, store: str | None, model, optimizer: tuple, weight_decay: float,
                    label_smoothing: float) -> TrainStep:
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  gradient, update = bind_steps(model, _adam(*optimizer), weight_decay, label_smoothing)
  return TrainStep(
      _jit(gradient, 'gradient_step', (model, weight_decay, label_smoothing), store,
           in_shardings=(replicated, batch), out_shardings=replicated,
           compiler_options=compiler_options(mesh)),
      _jit(update, 'update_step', (optimizer, weight_decay), store,
           in_shardings=(replicated,) * 3, out_shardings=replicated, donate_argnums=(0,)))


@functools.lru_cache(maxsize=4)
def _jit_eval_step(mesh: Mesh, store: str | None, model):
  return _jit(functools.partial(eval_step, model=model), 'eval_step', (model,), store,
              in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))),
              out_shardings=NamedSharding(mesh, P()), compiler_options=compiler_options(mesh))


@functools.lru_cache(maxsize=4)
def _jit_optimizer_init(mesh: Mesh, tx):
  return jax.jit(tx.init, out_shardings=NamedSharding(mesh, P()),
                 compiler_options=compiler_options(mesh))


class Parallel:
  """Data parallelism over every device of every process: a 1-D mesh 'data', parameters
  replicated, batches split along their first axis; steps are `jax.jit` with explicit shardings
  (the modern form of pmap: one SPMD program per step function, XLA inserts the gradient
  all-reduce)."""

  def __init__(self, devices=None):
    self.mesh = Mesh(jax.devices() if devices is None else devices, ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch = NamedSharding(self.mesh, P('data'))

  def check_batch_size(self, batch_size: int):
    n = self.mesh.size
    if batch_size % n:
      raise ConfigError(f'train.batch_size={batch_size} is not divisible by the {n} '
                        'devices the batch is split over; use a multiple of the device count.')

  def put_batch(self, batch: dict, keys=('image', 'label', 'soft_label', 'mask')):
    """A host-local numpy batch → global arrays sharded over 'data' (multi-host aware)."""
    return {k: jax.make_array_from_process_local_data(self.batch, batch[k]) for k in keys}

  def jit_train_step(self, model, train: ml_collections.ConfigDict, steps_per_epoch: int,
                     store: str | None = None):
    """The `TrainStep` jit-compiled over the mesh, with the optimiser of `create_optimizer(train,
    steps_per_epoch)`. The same mesh, model, optimiser and loss settings give the same function,
    whose compiled programs are then reused: runs of one process with those settings
    (cross-validation folds of equal epoch length, a run resumed in the same process) trace and
    compile it once. With a `store` directory its lowered programs are kept there for later
    processes (`program_store`)."""
    optimizer = optimizer_settings(train, steps_per_epoch)
    return _jit_train_step(self.mesh, store, model, optimizer, train.weight_decay,
                           train.label_smoothing)

  def jit_eval_step(self, model, store: str | None = None):
    """`eval_step` jit-compiled over the mesh, reused and stored like `jit_train_step`."""
    return _jit_eval_step(self.mesh, store, model)

  def init_state(self, model: nn.Module, image_size: int, tx, seed: int,
                 abstract: TrainState | None = None) -> TrainState:
    """The initial TrainState on every device: parameters drawn on the host from `seed`
    (`layers.draw_params`: nothing to compile, at any width, the same numbers on every process),
    step 0, and the optimiser's state of those parameters."""
    if abstract is None:
      abstract = abstract_state(model, image_size, tx)
    params = jax.device_put(draw_params(abstract.params, model.init_scheme, seed), self.replicated)
    opt_state = _jit_optimizer_init(self.mesh, tx)(params)
    step = jax.device_put(np.zeros((), np.int32), self.replicated)
    return TrainState(step=step, params=params, opt_state=opt_state)
