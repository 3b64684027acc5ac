"""Test setup: 8 fake CPU devices (set before JAX is imported), quiet TF."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
if '--xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
# Commands run in-process would otherwise use the user's persistent cache.
os.environ.setdefault('RESTREACT_COMPILATION_CACHE', 'none')

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_gin():
  """Each test starts from an empty gin config."""
  import gin
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)
