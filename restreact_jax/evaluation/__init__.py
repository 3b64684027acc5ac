"""restreact_jax.evaluation."""
