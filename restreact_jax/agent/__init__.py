"""restreact_jax.agent."""
