"""restreact-jax: ReST meets ReAct (arXiv 2312.10003) as a JAX framework, T5X-style."""

__version__ = '0.1.0'
