"""lnl_jax: LNLAttenNet (local non-local joint network for facial expression recognition) in JAX/Flax."""
