"""Tests for model sizes (gin files), analytic counts and `restreact params`."""

import json

import gin
import pytest

from restreact_jax import errors, gin_utils, main
from restreact_jax.models import configs

# Published parameter counts of the real-scale shapes.
PUBLISHED = {
    'gemma_2b': 2_506_172_416,
    'llama3_8b': 8_030_261_248,
    'qwen2_1_5b': 1_543_714_304,
}
CPU_SIZES = {'tiny': (1e5, 1e6), 'xs': (1.5e6, 2.5e6), 's': (6e6, 10e6), 'm': (20e6, 30e6)}


def _model(size: str, *bindings: str) -> configs.TransformerConfig:
  import restreact_jax.gin_registry  # noqa: F401  (registers models.TransformerConfig)
  gin.clear_config()  # parse() finalizes and locks; start over
  gin_utils.parse([f'gin/models/{size}.gin'], bindings)
  return gin.query_parameter('MODEL/macro.value').scoped_configurable_fn()


@pytest.mark.parametrize('size', sorted(CPU_SIZES))
def test_cpu_sizes_are_in_range_and_grow(size):
  cfg = _model(size)
  low, high = CPU_SIZES[size]
  assert low < configs.param_count(cfg) < high
  assert cfg.vocab_size == 2048


def test_vocab_size_macro_overrides_every_size():
  cfg = _model('s', 'VOCAB_SIZE = 512')
  assert cfg.vocab_size == 512
  assert configs.embedding_param_count(cfg) == 512 * cfg.embed_dim


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_real_scale_shapes_match_published_counts(name):
  cfg = _model(name)
  assert configs.param_count(cfg) == PUBLISHED[name]
  assert cfg.family in name


def test_params_command_counts_from_shapes(capsys):
  result = main.run(['params', '--gin_file=gin/models/llama3_8b.gin', '--seq_len=4096'])
  assert result['total'] == PUBLISHED['llama3_8b']
  assert result['embedding'] == 2 * 128256 * 4096  # untied: table + output projection
  assert result['non_embedding'] == result['total'] - result['embedding']
  out = capsys.readouterr().out
  assert '8,030,261,248' in out and 'seq_len=4096' in out
  cfg = _model('llama3_8b')
  assert result['flops_per_token'] == configs.flops_per_token(cfg, 4096)


def test_params_command_json_and_errors(capsys):
  main.run(['params', '--gin_file=gin/models/tiny.gin', '--json'])
  printed = json.loads(capsys.readouterr().out)
  assert printed['total'] == configs.param_count(_model('tiny'))
  gin.clear_config()
  with pytest.raises(errors.UserError, match='no model'):
    main.run(['params'])
  gin.clear_config()
  with pytest.raises(errors.UserError, match='seq_len'):
    main.run(['params', '--gin_file=gin/models/tiny.gin', '--seq_len=abc'])
  gin.clear_config()
  assert main.main(['params', '--gin_file=gin/models/tiny.gin',
                    '--gin.models.TransformerConfig.num_kv_heads=3']) == 2
