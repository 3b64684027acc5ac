"""restreact_jax.models."""
