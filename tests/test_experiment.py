"""Tests for the experiment directory and its manifest."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from restreact_jax import errors
from restreact_jax.rest import experiment


def _writer(text, calls):

  def fn(out):
    calls.append(str(out))
    (out / 'data.txt').write_text(text)
    return {'chars': len(text)}

  return fn


def test_phase_runs_once_and_records(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  calls = []
  result = exp.run('world', _writer('abc', calls), output='world', config={'seed': 1})
  assert result == {'chars': 3}
  assert (tmp_path / 'world' / 'data.txt').read_text() == 'abc'
  again = experiment.Experiment(tmp_path, log=lambda _: None)
  assert again.run('world', _writer('zzz', calls), output='world', config={'seed': 1}) == {'chars': 3}
  assert len(calls) == 1  # skipped the second time
  manifest = json.loads((tmp_path / 'manifest.json').read_text())
  assert manifest['phases']['world']['output'] == 'world'


def test_changed_config_redoes_phase_and_downstream(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  calls = []
  exp.run('world', _writer('a', calls), output='world', config={'seed': 1})
  exp.run('vocab', _writer('v', calls), output='vocab', config={}, deps=['world'])
  assert len(calls) == 2
  exp.run('vocab', _writer('v', calls), output='vocab', config={}, deps=['world'])
  assert len(calls) == 2
  exp.run('world', _writer('bb', calls), output='world', config={'seed': 2})
  assert (tmp_path / 'world' / 'data.txt').read_text() == 'bb'
  exp.run('vocab', _writer('v2', calls), output='vocab', config={}, deps=['world'])
  assert len(calls) == 4
  assert (tmp_path / 'vocab' / 'data.txt').read_text() == 'v2'


def test_failed_atomic_phase_keeps_previous_output(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  exp.run('world', _writer('good', []), output='world', config={'seed': 1})

  def boom(out):
    (out / 'data.txt').write_text('half')
    raise RuntimeError('killed')

  exp.invalidate('world')
  with pytest.raises(RuntimeError):
    exp.run('world', boom, output='world', config={'seed': 1})
  assert (tmp_path / 'world' / 'data.txt').read_text() == 'good'
  assert not list(tmp_path.glob('.world.tmp-*'))
  assert exp.record('world') is None


def test_resumable_phase_writes_in_place_and_resumes(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)

  def partial(out):
    (out / 'part-0').write_text('x')
    raise RuntimeError('killed')

  with pytest.raises(RuntimeError):
    exp.run('train', partial, output='train', config={'steps': 2}, resumable=True)
  seen = []

  def finish(out):
    seen.extend(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))
    (out / 'part-1').write_text('y')
    return len(seen)

  assert exp.run('train', finish, output='train', config={'steps': 2}, resumable=True) == 1
  assert seen == ['part-0']


def test_resumable_phase_with_new_config_starts_clean(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)

  def partial(out):
    (out / 'part-0').write_text('x')
    raise RuntimeError('killed')

  with pytest.raises(RuntimeError):
    exp.run('train', partial, output='train', config={'steps': 2}, resumable=True)
  seen = []
  exp.run('train', lambda out: seen.extend(p.name for p in out.iterdir()
                                           if not p.name.startswith('.')),
          output='train', config={'steps': 3}, resumable=True)
  assert seen == []


def test_unknown_dependency_and_bad_manifest(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  with pytest.raises(errors.UserError, match="phase 'world' has not run"):
    exp.run('vocab', _writer('v', []), output='vocab', deps=['world'])
  (tmp_path / 'manifest.json').write_text('{"version": 1, "phases": ')
  with pytest.raises(errors.UserError, match='manifest.json: not valid JSON'):
    experiment.Experiment(tmp_path)


def test_kill_9_during_atomic_phase_leaves_old_output(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  exp.run('world', _writer('good', []), output='world', config={'seed': 1})
  script = textwrap.dedent(f"""
      import os, time
      from restreact_jax.rest import experiment
      exp = experiment.Experiment({str(tmp_path)!r}, log=lambda _: None)
      def slow(out):
        (out / 'data.txt').write_text('new')
        print('writing', flush=True)
        time.sleep(60)
      exp.run('world', slow, output='world', config={{'seed': 2}})
  """)
  proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'writing'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert (tmp_path / 'world' / 'data.txt').read_text() == 'good'
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  exp.run('world', _writer('new', []), output='world', config={'seed': 2})
  assert (tmp_path / 'world' / 'data.txt').read_text() == 'new'
  assert not list(tmp_path.glob('.world.*'))
