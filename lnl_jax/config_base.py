"""The one experiment definition every `configs/<dataset>.py` starts from, and its variants.

A config file is an experiment (big_vision style): `configs/raf.py:cpu,none` is RAF-DB with the
`cpu` size and the Model-S ablation. Variants are comma-separated words, parsed once here:

  smoke      under a minute on a CPU: tiny width, 64-px images, a few batches (tests, CI), He init
  cpu        the paper's geometry (144 px, M = 16, 48-px patches) at width 1/16 with a 256-128 head,
             He init: the network of the paper, narrower, for 2 CPU cores
  bf16       bfloat16 compute (parameters stay float32)
  both | local | nonlocal | none
             Table IV: LNLAttenNet, Model-Local, Model-NonLocal, Model-S
  fold=K     which cross-validation fold is the test set (k-fold datasets)

Every field can also be set on the command line: `--config.model.alpha=0.5`.
"""
from __future__ import annotations

import ml_collections

ATTENTION_VARIANTS = ('both', 'local', 'nonlocal', 'none')


def base_config() -> ml_collections.ConfigDict:
  """The paper's recipe (Sec. IV-A) at full size."""
  c = ml_collections.ConfigDict()
  c.name = ''  # set by the dataset file, e.g. 'raf' or 'raf:cpu,none'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'  # dataset key in lnl_jax/data/datasets.py
  c.data.root = ''  # where the downloaded dataset lives (see README, per dataset)
  c.data.image_size = 144  # Sec. IV-A: faces resized to 144×144
  c.data.crop_padding = 8  # random crop: reflect-pad this many px, crop back (0 = no crop)
  c.data.flip = True  # random horizontal flips (Sec. IV-A)
  c.data.erase_prob = 0.0  # random erasing (occlusion augmentation), off in the paper
  c.data.on_bad_image = 'skip'  # undecodable images: 'skip' (counted in the log) or 'fail'
  c.data.num_folds = 5  # k-fold datasets: subject-wise (CK+, JAFFE) or stratified (MMI, folders)
  c.data.fold = 0
  c.data.subject_pattern = ''  # MMI, class folders: regex giving the subject from a file name
  c.data.num_classes = 7  # AffectNet's and CK+'s 7 or 8 classes; training takes them from the data
  c.data.num_train = 3000  # synthetic faces only
  c.data.num_test = 700  # synthetic faces only
  c.data.occlusion_prob = 0.0  # synthetic faces only: chance of a random occluder
  c.data.limit = 0  # at most this many examples per split, every class in turn (0 = all)

  c.model = ml_collections.ConfigDict()
  c.model.attention = 'both'  # Table IV variant: both | local | nonlocal | none
  c.model.num_patches = 16  # M, a perfect square (Table VI)
  c.model.overlap = 16  # px between neighbouring patches (Table VII); P follows from Eq. (5)
  c.model.alpha = 0.7  # Eq. (1), Table V
  c.model.width = 1.0  # multiplier on every convolution width
  c.model.head_widths = (1024, 512)  # the two hidden FC layers of the head (Sec. III-C)
  c.model.ensemble = 'vmap'  # how the M patch networks run: vmap | loop | scan (same function)
  c.model.init = 'xavier'  # Sec. IV: Xavier; 'he' rescales the draws to He variance (see README)
  c.model.dtype = 'float32'  # compute dtype: float32 | bfloat16 (parameters stay float32)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32  # global, split over all devices
  c.train.num_epochs = 24
  c.train.learning_rate = 3e-4
  c.train.lr_decay = 0.95  # multiplied in once per epoch
  c.train.weight_decay = 1e-4  # λ of Eq. (3), on every kernel
  c.train.label_smoothing = 0.0
  c.train.on_nonfinite = 'stop'  # a non-finite loss/gradient: 'stop' with an error, or 'skip' the update
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 0  # extra mid-epoch checkpoints (0 = only at epoch ends)
  c.train.keep_checkpoints = 3  # the newest few are kept, plus the best by test accuracy
  c.train.mean_of_last = 10  # the paper's figure: mean test accuracy of the last 10 epochs
  c.train.track_faces = 8  # test faces whose wᵍ is logged during training (Fig. 11–12)
  c.train.track_every_steps = 50
  c.train.max_steps = 0  # stop after this many steps (0 = the full schedule); for smoke runs
  return c


def apply_variants(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  for word in filter(None, (w.strip() for w in (arg or '').split(','))):
    key, _, value = word.partition('=')
    if word == 'smoke':
      c.data.image_size, c.data.num_train, c.data.num_test, c.data.limit = 64, 96, 48, 96
      c.model.width, c.model.head_widths, c.model.overlap = 1 / 16, (32, 16), 8
      c.model.ensemble = 'scan'  # same function; compiles faster than 'loop' at this size
      c.model.init = 'he'  # Xavier sits at chance for hundreds of steps at small widths (README)
      c.train.batch_size, c.train.num_epochs, c.train.mean_of_last = 16, 2, 2
      c.train.log_every_steps = c.train.track_every_steps = 2
      c.train.track_faces = 4
    elif word == 'cpu':  # widths only: image size, M and overlap stay the paper's
      c.model.width, c.model.head_widths = 1 / 16, (256, 128)
      c.model.init = 'he'
      c.train.batch_size = 32
    elif word == 'bf16':
      c.model.dtype = 'bfloat16'
    elif word in ATTENTION_VARIANTS:
      c.model.attention = word
    elif key == 'fold' and value.isdigit():
      c.data.fold = int(value)
    else:
      raise ValueError(f'unknown config variant {word!r}; known: smoke, cpu, bf16, '
                       f'{", ".join(ATTENTION_VARIANTS)}, fold=K')
  return c


def dataset_config(name: str, arg: str | None, **data) -> ml_collections.ConfigDict:
  """The base config for dataset `name` with its data fields and the variants in `arg`."""
  c = base_config()
  c.data.name = name
  c.data.update(data)
  c.name = f'{name}:{arg}' if arg else name
  return apply_variants(c, arg)
