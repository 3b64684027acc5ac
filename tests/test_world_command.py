"""Tests for `restreact world` and `restreact search` through the CLI entry."""

import json

import gin
import pytest

from restreact_jax import errors
from restreact_jax import main

DEMO = '--gin_file=gin/experiments/demo_cpu.gin'
SMALL = ['--gin.world.num_entities=120', '--gin.world.num_train=40',
         '--gin.world.num_dev=10', '--gin.world.num_test=10']


def _run(argv):
  # The CLI finalizes (locks) gin; each call here is a fresh invocation.
  gin.clear_config(clear_constants=True)  # also unlocks
  return main.run(argv)


def _world(exp_dir, *extra):
  return _run(['world', DEMO, f"--gin.EXP_DIR='{exp_dir}'", *SMALL, *extra])


def test_world_writes_outputs_and_skips_when_current(tmp_path, capsys):
  _world(tmp_path)
  world_dir = tmp_path / 'world'
  for name in ('corpus.jsonl', 'entities.jsonl', 'world.json', 'questions/train.jsonl',
               'questions/dev.jsonl', 'questions/test.jsonl', 'questions/canon.jsonl'):
    assert (world_dir / name).exists(), name
  assert (tmp_path / 'search' / 'bm25' / 'meta.json').exists()
  assert (tmp_path / 'config.gin').exists()
  summary = json.loads((world_dir / 'world.json').read_text())
  assert summary['config']['num_entities'] == 120
  assert summary['counts']['questions'] == {'train': 40, 'dev': 10, 'test': 10}
  stamp = (world_dir / 'corpus.jsonl').stat().st_mtime_ns
  capsys.readouterr()
  _world(tmp_path)
  out = capsys.readouterr().out
  assert 'skipped' in out and 'index' in out
  assert (world_dir / 'corpus.jsonl').stat().st_mtime_ns == stamp


def test_world_rebuilds_when_the_seed_changes(tmp_path):
  _world(tmp_path)
  before = (tmp_path / 'world' / 'corpus.jsonl').read_bytes()
  _world(tmp_path, '--gin.WORLD_SEED=5')
  assert (tmp_path / 'world' / 'corpus.jsonl').read_bytes() != before
  assert json.loads((tmp_path / 'world' / 'world.json').read_text())['config']['seed'] == 5
  meta = json.loads((tmp_path / 'search' / 'bm25' / 'meta.json').read_text())
  from restreact_jax.search import bm25
  assert meta['corpus_sha256'] == bm25.file_sha256(tmp_path / 'world' / 'corpus.jsonl')


def test_world_takes_its_question_mix_from_gin(tmp_path):
  _world(tmp_path, "--gin.world.qtype_weights={'two_hop': 0.8, 'one_hop': 0.2}")
  train = tmp_path / 'world' / 'questions' / 'train.jsonl'
  written = train.read_text()
  qtypes = [json.loads(line)['qtype'] for line in written.splitlines()]
  assert qtypes.count('two_hop') == 32 and qtypes.count('one_hop') == 8
  with pytest.raises(errors.UserError, match='world qtype_weights: .*sum to 1'):
    _world(tmp_path, "--gin.world.qtype_weights={'two_hop': 0.8}")
  assert train.read_text() == written  # the world already written is kept


def test_search_prints_results(tmp_path, capsys):
  _world(tmp_path)
  capsys.readouterr()
  results = _run(['search', DEMO, f"--gin.EXP_DIR='{tmp_path}'",
                      '--query', 'The Glass Orchard directed'])
  out = capsys.readouterr().out
  assert results[0][0].link_text == 'The Glass Orchard'
  assert 'query: The Glass Orchard directed' in out
  assert '[1] The Glass Orchard' in out and 'Mira Castell' in out


def test_search_with_cache_reports_hits(tmp_path, capsys):
  _world(tmp_path)
  args = ['search', DEMO, f"--gin.EXP_DIR='{tmp_path}'", '--gin.search.use_cache=True',
          '--query', 'Ardmere country']
  _run(args)
  capsys.readouterr()
  _run(args)
  assert 'cache: 1 hits, 0 misses' in capsys.readouterr().out


def test_search_errors_are_user_errors(tmp_path):
  with pytest.raises(errors.UserError, match='no BM25 index'):
    _run(['search', DEMO, f"--gin.EXP_DIR='{tmp_path}'", '--query', 'x'])
  with pytest.raises(errors.UserError, match='--query'):
    _run(['search', DEMO, f"--gin.EXP_DIR='{tmp_path}'"])
  with pytest.raises(errors.UserError, match='backend'):
    _run(['search', DEMO, f"--gin.EXP_DIR='{tmp_path}'", "--gin.search.backend='bing'",
              '--query', 'x'])
