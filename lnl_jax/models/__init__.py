"""LNLAttenNet's parts, one module per part of the paper (Fig. 4)."""
from lnl_jax.models.lnlattennet import LNLAttenNet, create_model, num_params

__all__ = ['LNLAttenNet', 'create_model', 'num_params']
