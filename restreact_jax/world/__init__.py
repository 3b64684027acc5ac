"""restreact_jax.world."""
