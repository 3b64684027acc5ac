"""restreact_jax.feedback."""
