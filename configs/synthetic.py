"""Synthetic faces (the embedded default: no download). Expression is drawn in eyes, brows and mouth.

  python -m lnl_jax.main --config=configs/synthetic.py:cpu --workdir=runs/synthetic
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('synthetic', arg)
