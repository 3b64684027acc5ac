"""Tests for launch/*.sh: flags, dry runs, and that a dry run prints what runs.

The scripts run against stand-ins for `restreact`, `gcloud`, `tar` and
`scontrol` that record their argv (and the RESTREACT_* environment) as JSON
lines, so the tests compare the printed commands with the executed ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / 'launch'
SCRIPTS = ('local.sh', 'tpu_pod.sh', 'gpu.sh')

# A stand-in executable: appends {"argv": [...], "env": {...}} to $RECORD.
# `gcloud ... describe` and the run's
# ssh fail when asked to via $FAKE_FAIL, like a missing slice or a crashed run.
_RECORDER = f"""#!{sys.executable}
import json, os, sys
name = os.path.basename(sys.argv[0])
argv = [name] + sys.argv[1:]
env = {{k: v for k, v in os.environ.items() if k.startswith('RESTREACT_')}}
with open(os.environ['RECORD'], 'a') as f:
  f.write(json.dumps({{'argv': argv, 'env': env}}) + '\\n')
if name == 'scontrol':
  print('node-a'); print('node-b')
fail = os.environ.get('FAKE_FAIL', '')
if name == 'gcloud' and 'describe' in argv and 'describe' in fail:
  sys.exit(1)
if name == 'gcloud' and 'ssh' in argv and 'run' in fail and any('restreact ' in a for a in argv):
  sys.exit(3)
"""


@pytest.fixture
def fakes(tmp_path):
  """A bin directory of recording stand-ins, and a reader of what they saw."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name in ('restreact', 'gcloud', 'tar', 'scontrol'):
    path = bin_dir / name
    path.write_text(_RECORDER)
    path.chmod(0o755)
  record = tmp_path / 'record.jsonl'
  env = {
      'PATH': f'{bin_dir}:/usr/bin:/bin',
      'RECORD': str(record),
      'HOME': str(tmp_path),
      'USER': 'tester',
  }

  def run(script: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(LAUNCH / script), *args], env={**env, **extra_env},
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)

  def calls() -> list[dict]:
    if not record.exists():
      return []
    return [json.loads(line) for line in record.read_text().splitlines()]

  run.calls = calls
  run.bin_dir = bin_dir
  return run


def _lines(proc: subprocess.CompletedProcess) -> list[list[str]]:
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_exits_zero_and_lists_flags(fakes, script):
  proc = fakes(script, '--help')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('usage: launch/' + script)
  assert '--dry-run' in proc.stdout
  assert fakes.calls() == []  # --help runs nothing


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_are_strict_bash(script):
  text = (LAUNCH / script).read_text()
  assert text.startswith('#!/usr/bin/env bash')
  assert 'set -euo pipefail' in text
  proc = subprocess.run(['bash', '-n', str(LAUNCH / script)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck not installed')
def test_shellcheck_clean():
  proc = subprocess.run(['shellcheck', *(str(LAUNCH / s) for s in SCRIPTS)],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


# --- local.sh ---------------------------------------------------------------


def test_local_dry_run_prints_the_command_it_runs(fakes):
  args = ('--exp_dir=runs/x', '--gin.TRAIN_STEPS=5', "--gin.MESH_SHAPE=(2, 4)")
  (printed,) = _lines(fakes('local.sh', '--dry-run', *args))
  assert fakes.calls() == []
  assert printed[1:] == ['rest', '--gin_file=gin/experiments/demo_cpu.gin',
                         '--gin.EXP_DIR="runs/x"', '--gin.TRAIN_STEPS=5',
                         '--gin.MESH_SHAPE=(2, 4)']
  proc = fakes('local.sh', *args)
  assert proc.returncode == 0, proc.stderr
  (call,) = fakes.calls()
  assert call['argv'] == ['restreact', *printed[1:]]
  assert (fakes.bin_dir.parent / 'runs' / 'x').is_dir()


def test_local_default_exp_dir_is_runs_demo(fakes):
  (printed,) = _lines(fakes('local.sh', '--dry-run'))
  assert '--gin.EXP_DIR="runs/demo"' in printed


# --- gpu.sh -----------------------------------------------------------------


def _split_exports(lines: list[list[str]]) -> tuple[dict[str, str], list[str]]:
  exports = {}
  for words in lines[:-1]:
    assert words[0] == 'export'
    key, value = words[1].split('=', 1)
    exports[key] = value
  return exports, lines[-1]


def test_gpu_single_host_exports_nothing(fakes):
  exports, command = _split_exports(_lines(fakes('gpu.sh', '--dry-run', '--gin_file=a.gin')))
  assert exports == {}
  assert command[1:] == ['rest', '--gin_file=a.gin', '--gin.EXP_DIR="runs/gpu"']


def test_gpu_multi_process_dry_run_matches_the_run(fakes):
  args = ('--gin_file=a.gin', '--gin_file=b.gin', '--command=rollout',
          '--coordinator=10.0.0.1:1234', '--num_processes=4', '--process_id=3',
          '--local_device_ids=0,1', '--gin.MESH_SHAPE=(4, 2)', '--steps=3')
  exports, command = _split_exports(_lines(fakes('gpu.sh', '--dry-run', *args)))
  assert exports == {
      'RESTREACT_COORDINATOR': '10.0.0.1:1234',
      'RESTREACT_NUM_PROCESSES': '4',
      'RESTREACT_PROCESS_ID': '3',
      'RESTREACT_LOCAL_DEVICE_IDS': '0,1',
  }
  assert command[1:] == ['rollout', '--gin_file=a.gin', '--gin_file=b.gin',
                         '--gin.EXP_DIR="runs/gpu"', '--gin.MESH_SHAPE=(4, 2)', '--steps=3']
  proc = fakes('gpu.sh', *args)
  assert proc.returncode == 0, proc.stderr
  (call,) = fakes.calls()
  assert call['argv'] == ['restreact', *command[1:]]
  assert call['env'] == exports


def test_gpu_reads_slurm(fakes):
  slurm = {'SLURM_JOB_ID': '4242', 'SLURM_NTASKS': '2', 'SLURM_PROCID': '1',
           'SLURM_JOB_NODELIST': 'node-[a-b]'}
  exports, _ = _split_exports(_lines(fakes('gpu.sh', '--dry-run', '--gin_file=a.gin', **slurm)))
  assert exports == {'RESTREACT_COORDINATOR': f'node-a:{29500 + 4242 % 1000}',
                     'RESTREACT_NUM_PROCESSES': '2', 'RESTREACT_PROCESS_ID': '1'}
  exports, _ = _split_exports(_lines(
      fakes('gpu.sh', '--dry-run', '--gin_file=a.gin', '--no_slurm', **slurm)))
  assert exports == {}


@pytest.mark.parametrize('args, message', [
    (('--coordinator=h:1',), 'need --coordinator, --num_processes and --process_id'),
    (('--coordinator=h', '--num_processes=2', '--process_id=0'), 'HOST:PORT'),
    (('--coordinator=h:1', '--num_processes=2', '--process_id=2'), 'not below'),
    (('stray',), "unexpected argument 'stray'"),
])
def test_gpu_bad_flags_are_one_clear_line(fakes, args, message):
  proc = fakes('gpu.sh', '--dry-run', '--gin_file=a.gin', *args)
  assert proc.returncode == 2
  assert proc.stderr.count('\n') == 1 and message in proc.stderr
  assert proc.stdout == '' and fakes.calls() == []


def test_gpu_needs_a_gin_file(fakes):
  proc = fakes('gpu.sh', '--dry-run')
  assert proc.returncode == 2 and '--gin_file is required' in proc.stderr


# --- tpu_pod.sh -------------------------------------------------------------

_TPU_ARGS = ('--zone=us-central2-b', '--accelerator_type=v4-32', '--project=proj',
             '--name=exp-1', '--gin_file=gin/experiments/x.gin', '--command=rollout',
             '--gin.MESH_SHAPE=(4, 4)')


def _dry_run_commands(proc) -> list[list[str]]:
  """The printed lines as argv lists; `describe ... || create ...` gives both."""
  commands = []
  for line in proc.stdout.splitlines():
    for part in line.split(' || '):
      words = shlex.split(part)
      commands.append([w for w in words if w not in ('>/dev/null', '2>&1')])
  return commands


def _remote(argv: list[str]) -> str:
  (command,) = [a for a in argv if a.startswith('--command=')]
  return command[len('--command='):]


def test_tpu_dry_run_matches_the_run(fakes):
  dry = fakes('tpu_pod.sh', '--dry-run', *_TPU_ARGS)
  assert dry.returncode == 0, dry.stderr
  assert fakes.calls() == []
  printed = _dry_run_commands(dry)

  proc = fakes('tpu_pod.sh', *_TPU_ARGS, FAKE_FAIL='describe')
  assert proc.returncode == 0, proc.stderr
  ran = [c['argv'] for c in fakes.calls()]
  assert ran == printed

  scope = ['--zone=us-central2-b', '--project=proj']
  assert ran[0][:8] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'exp-1', *scope]
  assert ran[1][:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'exp-1']
  assert '--accelerator-type=v4-32' in ran[1]
  assert ran[2][0] == 'tar'
  assert ran[3][4] == 'scp' and '--worker=all' in ran[3]
  ssh = [a for a in ran if a[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh']]
  assert len(ssh) == 3 and all('--worker=all' in a for a in ssh)
  assert "'jax[tpu]==" in _remote(ssh[1])
  run_words = shlex.split(_remote(ssh[2]).split(' 2>&1 ')[0])
  assert run_words[3:] == ['.venv/bin/restreact', 'rollout', '--gin_file=gin/experiments/x.gin',
                           '--gin.EXP_DIR="runs/exp-1"', '--multihost',
                           '--gin.MESH_SHAPE=(4, 4)']
  for argv in ssh:  # every remote command is valid shell
    check = subprocess.run(['bash', '-n', '-c', _remote(argv)], capture_output=True, text=True)
    assert check.returncode == 0, (argv, check.stderr)


def test_tpu_reuses_an_existing_slice(fakes):
  proc = fakes('tpu_pod.sh', *_TPU_ARGS, '--skip_setup')
  assert proc.returncode == 0, proc.stderr
  verbs = [c['argv'][4] for c in fakes.calls()]
  assert verbs == ['describe', 'ssh']


def test_tpu_repo_url_clones_instead_of_copying(fakes):
  printed = _dry_run_commands(fakes('tpu_pod.sh', '--dry-run', *_TPU_ARGS,
                                    '--repo_url=https://example.com/r.git', '--branch=v1'))
  assert not any(c[0] == 'tar' or 'scp' in c for c in printed)
  clone = _remote(printed[2])
  assert 'git clone -q --branch v1 https://example.com/r.git restreact-jax' in clone


def test_tpu_delete_runs_even_when_the_run_fails(fakes):
  proc = fakes('tpu_pod.sh', *_TPU_ARGS, '--skip_setup', '--delete', FAKE_FAIL='run')
  assert proc.returncode == 3
  verbs = [c['argv'][4] for c in fakes.calls()]
  assert verbs == ['describe', 'ssh', 'delete']


def test_tpu_delete_only(fakes):
  printed = _dry_run_commands(fakes('tpu_pod.sh', '--dry-run', '--zone=z', '--name=exp-1',
                                    '--delete_only'))
  assert printed == [['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'exp-1', '--zone=z',
                      '--quiet']]


@pytest.mark.parametrize('args, message', [
    (('--gin_file=a.gin',), '--zone is required'),
    (('--zone=z',), '--gin_file is required'),
    (('--zone=z', '--gin_file=a.gin', '--name=Bad_Name'), 'not a valid TPU name'),
])
def test_tpu_bad_flags_are_one_clear_line(fakes, args, message):
  proc = fakes('tpu_pod.sh', '--dry-run', *args)
  assert proc.returncode == 2
  assert proc.stderr.count('\n') == 1 and message in proc.stderr
  assert fakes.calls() == []


def test_tpu_missing_slice_needs_accelerator_type(fakes):
  args = [a for a in _TPU_ARGS if not a.startswith('--accelerator_type')]
  proc = fakes('tpu_pod.sh', *args, FAKE_FAIL='describe')
  assert proc.returncode == 2 and '--accelerator_type is required' in proc.stderr
  assert [c['argv'][4] for c in fakes.calls()] == ['describe']


def test_readme_mentions_every_script():
  text = (LAUNCH / 'README.md').read_text()
  for script in SCRIPTS:
    assert f'launch/{script}' in text
  assert os.access(LAUNCH / 'local.sh', os.X_OK)
