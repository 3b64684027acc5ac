"""The persistent compilation cache: where it goes, the CLI flag, and that it is used."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from restreact_jax import compilation_cache, errors


@pytest.fixture
def restore_config():
  saved = jax.config.jax_compilation_cache_dir
  yield
  jax.config.update('jax_compilation_cache_dir', saved)


def test_explicit_directory_is_created_and_set(tmp_path, restore_config):
  target = tmp_path / 'a' / 'b'
  assert compilation_cache.enable(str(target)) == str(target)
  assert target.is_dir()
  assert jax.config.jax_compilation_cache_dir == str(target)


def test_none_turns_it_off(restore_config):
  before = jax.config.jax_compilation_cache_dir
  assert compilation_cache.enable('none') is None
  assert jax.config.jax_compilation_cache_dir == before


def test_an_existing_jax_setting_wins_when_no_flag(tmp_path, restore_config, monkeypatch):
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'jax'))
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / 'ours'))
  assert compilation_cache.enable(None) == str(tmp_path / 'jax')
  assert not (tmp_path / 'ours').exists()


def test_environment_then_default(tmp_path, restore_config, monkeypatch):
  jax.config.update('jax_compilation_cache_dir', None)
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / 'env'))
  assert compilation_cache.enable(None) == str(tmp_path / 'env')
  jax.config.update('jax_compilation_cache_dir', None)
  monkeypatch.delenv(compilation_cache.ENV)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compilation_cache.enable(None) == str(tmp_path / 'xdg' / 'restreact_jax' / 'xla')


def test_flag_is_consumed(tmp_path, restore_config):
  rest = compilation_cache.enable_from_flags({'compilation_cache': str(tmp_path / 'c'), 'x': '1'})
  assert rest == {'x': '1'}
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'c')


def test_uncreatable_directory_is_one_clear_error(tmp_path, restore_config):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.UserError, match='compilation cache directory'):
    compilation_cache.enable(str(blocker / 'sub'))


_PROGRAM = '''
import sys
from restreact_jax import compilation_cache
compilation_cache.enable(sys.argv[1])
import jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith('/cache_hits') else None)
value = float(jax.jit(lambda x: (x * 3.0 + 1.0).sum())(jnp.arange(7.0)))
print(len(hits), value)
'''


def test_a_second_process_reuses_the_first_ones_programs(tmp_path):
  cache = tmp_path / 'xla'
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'  # a tiny program compiles fast
  run = lambda: subprocess.run([sys.executable, '-c', _PROGRAM, str(cache)], env=env,
                               capture_output=True, text=True, check=True).stdout.split()[-2:]
  hits, value = run()
  assert (int(hits), value) == (0, '70.0')
  entries = sorted(p.name for p in pathlib.Path(cache).iterdir())
  assert entries, 'nothing was written to the cache'
  hits, value = run()
  assert int(hits) >= 1 and value == '70.0'
  assert sorted(p.name for p in pathlib.Path(cache).iterdir()) == entries


def test_the_cli_takes_the_flag_for_any_command(tmp_path, restore_config, capsys):
  from restreact_jax import main  # pylint: disable=g-import-not-at-top
  target = tmp_path / 'cli'
  assert main.main(['params', '--gin_file=gin/models/tiny.gin',
                    f'--compilation_cache={target}']) == 0
  assert jax.config.jax_compilation_cache_dir == str(target) and target.is_dir()
  blocker = tmp_path / 'file'
  blocker.write_text('')
  assert main.main(['params', '--gin_file=gin/models/tiny.gin',
                    f'--compilation_cache={blocker}/x']) == 2
  assert 'compilation cache directory' in capsys.readouterr().err
