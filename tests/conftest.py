"""Test setup: 8 fake CPU devices (set before JAX is imported), quiet TF.

Compiled programs go to a persistent cache private to this test session (the
same tiny models compile in many tests and in their subprocesses).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
if '--xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='restreact-test-xla-')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_gin():
  """Each test starts from an empty gin config."""
  import gin
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)
