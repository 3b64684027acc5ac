"""restreact_jax.rest."""
