"""Tests for `restreact compile` (restreact_jax/commands/compile.py).

The steps are compiled from shapes on the 8 fake CPU devices of conftest, with
models small enough to compile in seconds; the reported per-device bytes are
checked against what the parameter shardings imply, computed here by hand.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from restreact_jax import errors
from restreact_jax.commands import compile as compile_cmd
from restreact_jax.models import TransformerConfig, param_count

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Every sharded dimension divides a 4-way model axis (4 KV heads), so the
# expected bytes per device follow from the rules table alone.
DIVISIBLE = TransformerConfig(vocab_size=256, embed_dim=32, num_layers=1, num_heads=4,
                              num_kv_heads=4, head_dim=8, mlp_dim=64, max_len=64)
BATCH, SEQ = 8, 16


def _norm_params(config: TransformerConfig) -> int:
  return (2 * config.num_layers + 1) * config.embed_dim


@pytest.fixture(scope='module')
def report():
  return compile_cmd.compile_ahead(model=DIVISIBLE, mesh='2x4', batch_size=BATCH, seq_len=SEQ,
                                   decode_batch=4, prefill_len=8, decode_chunk=4)


def test_reports_every_step_with_memory_and_flops(report):
  assert report['mesh'] == [2, 4] and report['num_devices'] == 8
  assert set(report['steps']) == {'train', 'prefill', 'decode'}
  for name, step in report['steps'].items():
    for key in ('argument_bytes', 'output_bytes', 'temp_bytes', 'peak_bytes', 'flops'):
      assert key in step, (name, key)
    assert step['flops'] > 0, name
  assert report['replicated'] == []
  # The compiled step is the whole forward + backward + update: XLA's FLOPs per
  # device agree with the 6N + attention estimate (plus norms, softmax, AdamW).
  train = report['steps']['train']
  assert 0.9 < train['flops'] / train['model_flops'] < 1.6


def test_params_per_device_follow_the_shardings(report):
  total = param_count(DIVISIBLE)
  norms = _norm_params(DIVISIBLE)
  # Matrices are split 4 ways over `model`; norm scales are replicated.
  expected = 4 * ((total - norms) // 4 + norms)
  for name in ('train', 'prefill', 'decode'):
    assert report['steps'][name]['params_bytes'] == expected, name
  assert report['steps']['train']['params_bytes_total'] == 4 * total


def test_train_argument_bytes_are_state_plus_batch_shards(report):
  train = report['steps']['train']
  params = train['params_bytes']
  # The batch is split 2 ways over `data`: 5 int32/float32 features of [B, L].
  batch = 5 * (BATCH // 2) * SEQ * 4
  assert train['batch_bytes'] == batch
  # Parameters plus AdamW's two moments, the batch shard, and a few scalars
  # (step, optimizer counts, the PRNG key).
  assert 3 * params + batch <= train['argument_bytes'] <= 3 * params + batch + 64
  # XLA's own count is the sum of the shards the shardings imply (the 8-byte
  # PRNG key is not in that sum; jit prunes it when nothing uses it).
  assert 0 <= train['argument_bytes'] - train['expected_argument_bytes'] <= 8
  # The donated state comes back in place.
  assert train['alias_bytes'] >= 3 * params


def test_decode_arguments_include_the_sharded_cache(report):
  decode = report['steps']['decode']
  c = DIVISIBLE
  cache_len = SEQ  # default cache_len is seq_len
  # k and v: [layers, slots/2 (data), cache_len, kv_heads/4 (model), head_dim] float32.
  cache = 2 * c.num_layers * (4 // 2) * cache_len * (c.num_kv_heads // 4) * c.head_dim * 4
  assert decode['cache_bytes'] == cache + (4 // 2) * 4  # plus the lengths
  assert decode['argument_bytes'] >= decode['params_bytes'] + decode['cache_bytes']
  assert report['steps']['prefill']['argument_bytes'] == (
      report['steps']['prefill']['expected_argument_bytes'])
  # The decode loop resets its step counter, so jit prunes that int32 input.
  assert decode['argument_bytes'] == decode['expected_argument_bytes'] - 4


def test_fsdp_also_splits_parameters_over_data(report):
  plain = report
  fsdp = compile_cmd.compile_ahead(model=DIVISIBLE, mesh='2x4', batch_size=BATCH, seq_len=SEQ,
                                   steps='train', fsdp='true')
  p_plain = plain['steps']['train']['params_bytes']
  p_fsdp = fsdp['steps']['train']['params_bytes']
  norms = 4 * _norm_params(DIVISIBLE)
  # Everything with an `embed` dimension halves; the norm scales are `norm`-named.
  assert p_fsdp == (p_plain - norms) // 2 + norms
  assert fsdp['steps']['train']['argument_bytes'] < plain['steps']['train']['argument_bytes']


def test_indivisible_heads_are_reported_as_replicated():
  config = DIVISIBLE.replace(num_kv_heads=2)
  result = compile_cmd.compile_ahead(model=config, mesh='2x4', batch_size=BATCH, seq_len=SEQ,
                                     steps='prefill', prefill_len=8)
  names = sorted(line.split(':')[0] for line in result['replicated'])
  assert names == [f'layers_0/attn/{p}_proj' for p in ('k', 'v')]
  assert all('kv_heads=2 not divisible by model=4' in line for line in result['replicated'])


@pytest.mark.parametrize('kwargs, message', [
    (dict(mesh='4x2', batch_size=6), r'data axis \(4\) does not divide the training batch'),
    (dict(mesh='2x4', batch_size=8, num_microbatches=3), 'not divisible by --num_microbatches'),
    (dict(mesh='2x4', batch_size=8, decode_batch=3),
     r'data axis \(2\) does not divide --decode_batch'),
    (dict(mesh='2by4'), 'DATAxMODEL'),
    (dict(mesh='2x0'), 'DATAxMODEL'),
    (dict(mesh='2x4', seq_len='long'), '--seq_len must be an integer'),
    (dict(mesh='2x4', steps='train,sample'), '--steps must be a subset'),
    (dict(mesh='2x4', seq_len=16, prefill_len=16, decode_chunk=1), 'exceeds the cache length'),
    (dict(mesh='4x4'), 'needs 16 devices'),
])
def test_bad_arguments_are_one_clear_line(kwargs, message):
  # Start JAX (conftest's 8 devices) so a bigger mesh cannot be set up in-process.
  assert len(jax.devices()) == 8
  with pytest.raises(errors.UserError) as e:
    compile_cmd.compile_ahead(model=DIVISIBLE, **{'seq_len': SEQ, **kwargs})
  # gin appends an "In call to configurable" line; the message itself is one line.
  assert re.search(message, str(e.value).splitlines()[0])


def test_missing_model_and_mesh_are_user_errors():
  with pytest.raises(errors.UserError, match='no model'):
    compile_cmd.compile_ahead(mesh='2x4')
  with pytest.raises(errors.UserError, match='must be a models.TransformerConfig'):
    compile_cmd.compile_ahead(model='gemma', mesh='2x4')
  with pytest.raises(errors.UserError, match='no mesh'):
    compile_cmd.compile_ahead(model=DIVISIBLE)


@pytest.mark.parametrize('text, shape', [('2x4', (2, 4)), ('16X1', (16, 1)), ('(2, 4)', (2, 4)),
                                         ('2,4', (2, 4)), ((4, 2), (4, 2))])
def test_parse_mesh(text, shape):
  assert compile_cmd.parse_mesh(text) == shape


def _cli(args: list[str], prelude: str = '') -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  code = (f'import sys\n{prelude}\nfrom restreact_jax import main\n'
          f'sys.argv = ["restreact", *{args!r}]\nsys.exit(main.main())\n')
  return subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT, capture_output=True,
                        text=True, timeout=240)


@pytest.mark.slow
def test_cli_reexecs_with_enough_fake_devices(tmp_path):
  # JAX already started with one device, so the command must start again with 16.
  out = tmp_path / 'report.json'
  proc = _cli(['compile', '--gin_file=gin/models/tiny.gin', '--mesh=4x4', '--steps=prefill',
               '--seq_len=32', '--batch_size=4', f'--json={out}'],
              prelude='import jax\nassert len(jax.devices()) == 1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report['num_devices'] == 16 and report['mesh'] == [4, 4]
  assert 'prefill' in report['steps'] and 'train' not in report['steps']
  assert 'replicated: ' in proc.stdout  # tiny has 2 KV heads on a 4-way model axis


@pytest.mark.slow
def test_cli_json_to_stdout_with_gin_bound_shapes():
  proc = _cli(['compile', '--gin_file=gin/models/tiny.gin', '--mesh=2x2', '--json=-',
               '--gin.compile_ahead.steps="decode"', '--gin.compile_ahead.decode_batch=4',
               '--seq_len=32'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report['num_devices'] == 4
  assert report['shapes']['decode_batch'] == 4
  assert list(report['steps']) == ['decode']


def test_cli_bad_mesh_is_one_line():
  proc = _cli(['compile', '--gin_file=gin/models/tiny.gin', '--mesh=3x4', '--batch_size=4'])
  assert proc.returncode == 2
  errors_printed = [line for line in proc.stderr.splitlines()
                    if line.startswith('restreact: error:')]
  assert errors_printed == [
      'restreact: error: compile: the mesh data axis (3) does not divide the training batch '
      '(batch_size 4 / num_microbatches 1 = 4 rows); use a multiple of 3']
  assert 'Traceback' not in proc.stderr
