"""Logit parity of imported Hugging Face checkpoints, and bad-input errors.

Tiny random `LlamaForCausalLM`, `Qwen2ForCausalLM` and `GemmaForCausalLM` are
built here with `transformers` (torch, CPU, float32), every weight randomised
(so norm scales and biases matter), saved with `save_pretrained`, imported, and
compared with the torch logits: full forward, and prefill + 8 cached greedy
decode steps.
"""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from restreact_jax import errors, partitioning  # noqa: E402
from restreact_jax.models import hf_import  # noqa: E402
from restreact_jax.models.transformer import KVCache, Mode, Transformer  # noqa: E402

ATOL = 1e-4
COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-6)
FAMILIES = {
    'llama': ('LlamaConfig', 'LlamaForCausalLM', {'rope_theta': 5000.0}),
    'qwen2': ('Qwen2Config', 'Qwen2ForCausalLM', {'tie_word_embeddings': True}),
    'gemma': ('GemmaConfig', 'GemmaForCausalLM', {'head_dim': 16, 'num_key_value_heads': 1}),
}


def _make_hf(family: str, seed: int = 0):
  config_cls, model_cls, extra = FAMILIES[family]
  torch.manual_seed(seed)
  config = getattr(transformers, config_cls)(**{**COMMON, **extra})
  model = getattr(transformers, model_cls)(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('norm.weight'):
        base = 0.0 if family == 'gemma' else 1.0
        p.copy_(base + 0.3 * torch.randn_like(p))
      else:
        p.copy_(0.2 * torch.randn_like(p))
  return model


@functools.lru_cache(maxsize=None)
def _saved(family: str, root: str, sharded: bool = False):
  model = _make_hf(family)
  path = f'{root}/{family}{"_sharded" if sharded else ""}'
  if sharded:
    model.save_pretrained(path, max_shard_size='20KB')
  else:
    model.save_pretrained(path)
  return model, path


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp('hf'))


def _hf_logits(model, tokens) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


@functools.lru_cache(maxsize=None)
def _runner(config):
  model = Transformer(config)

  @functools.partial(jax.jit, static_argnames='mode')
  def run(params, tokens, mode=Mode.TRAIN, cache=None, lengths=None):
    return model.apply({'params': params}, tokens, mode=mode, cache=cache,
                       input_lengths_B=lengths)

  return run


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_full_forward_and_cached_greedy_decode_match_hf(family, root):
  hf_model, path = _saved(family, root)
  config, params = hf_import.load_hf_checkpoint(path)
  assert config.family == family
  run = _runner(config)

  tokens = np.random.default_rng(0).integers(0, COMMON['vocab_size'], size=(2, 12))
  ours, _ = run(params, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), _hf_logits(hf_model, tokens), atol=ATOL, rtol=0)

  # Prefill two prompts of different lengths (right-padded), then 8 greedy steps;
  # each step's logits must match HF's on the same growing sequence.
  prompt_lengths = [7, 4]
  padded = np.zeros((2, 7), np.int64)
  for b, n in enumerate(prompt_lengths):
    padded[b, :n] = tokens[b, :n]
  cache = KVCache.init(config, 2, 24)
  logits, cache = run(params, jnp.asarray(padded), mode=Mode.PREFILL, cache=cache,
                      lengths=jnp.asarray(prompt_lengths, jnp.int32))
  seqs = [list(tokens[b, :n]) for b, n in enumerate(prompt_lengths)]
  last = np.stack([np.asarray(logits)[b, n - 1] for b, n in enumerate(prompt_lengths)])
  for _ in range(8):
    for b in range(2):
      np.testing.assert_allclose(last[b], _hf_logits(hf_model, [seqs[b]])[0, -1], atol=ATOL,
                                 rtol=0)
    nxt = last.argmax(-1)
    for b in range(2):
      seqs[b].append(int(nxt[b]))
    step, cache = run(params, jnp.asarray(nxt[:, None], jnp.int32), mode=Mode.DECODE,
                      cache=cache)
    last = np.asarray(step)[:, 0]
  np.testing.assert_array_equal(cache.lengths, [15, 12])


def test_sharded_checkpoint_onto_mesh_matches_hf(root):
  hf_model, path = _saved('llama', root, sharded=True)
  index = json.load(open(f'{path}/{hf_import.INDEX_FILE}'))
  assert len(set(index['weight_map'].values())) > 1  # really several files
  mesh = partitioning.make_mesh((2, 4))
  config, params = hf_import.load_hf_checkpoint(path, mesh=mesh)
  q = params['layers_0']['attn']['q_proj']
  assert q.sharding.spec == P(None, 'model')
  assert q.sharding.mesh.shape == mesh.shape
  tokens = np.random.default_rng(1).integers(0, COMMON['vocab_size'], size=(2, 9))
  ours, _ = _runner(config)(params, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), _hf_logits(hf_model, tokens), atol=ATOL, rtol=0)


def test_bfloat16_checkpoint_loads_as_bfloat16(root, tmp_path):
  hf_model, _ = _saved('qwen2', root)
  path = tmp_path / 'bf16'
  hf_model.to(torch.bfloat16).save_pretrained(path)
  hf_model.to(torch.float32)
  config, params = hf_import.load_hf_checkpoint(path)
  assert config.param_dtype == 'bfloat16' and config.dtype == 'bfloat16'
  assert params['embedding'].dtype == jnp.bfloat16
  config32, params32 = hf_import.load_hf_checkpoint(path, dtype='float32')
  assert params32['embedding'].dtype == jnp.float32
  tokens = np.arange(10)[None] % COMMON['vocab_size']
  ours, _ = _runner(config32)(params32, jnp.asarray(tokens))
  # bf16-rounded weights, f32 compute: close to the f32 reference, not equal.
  err = np.abs(np.asarray(ours) - _hf_logits(hf_model, tokens)).max()
  assert 1e-6 < err < 0.2


def test_config_from_hf_maps_fields():
  cfg = hf_import.config_from_hf({
      'model_type': 'gemma', 'vocab_size': 256000, 'hidden_size': 2048, 'intermediate_size': 16384,
      'num_hidden_layers': 18, 'num_attention_heads': 8, 'num_key_value_heads': 1,
      'head_dim': 256, 'hidden_act': 'gelu', 'hidden_activation': 'gelu_pytorch_tanh',
      'rms_norm_eps': 1e-6, 'rope_theta': 10000.0, 'torch_dtype': 'bfloat16',
      'max_position_embeddings': 8192})
  assert (cfg.activation, cfg.norm_offset, cfg.scale_embeddings, cfg.tie_embeddings) == (
      'gelu', True, True, True)
  assert (cfg.dtype, cfg.num_kv_heads, cfg.head_dim) == ('bfloat16', 1, 256)
  qwen = hf_import.config_from_hf({**COMMON, 'model_type': 'qwen2',
                                   'rope_parameters': {'rope_theta': 1e6, 'rope_type': 'default'}})
  assert qwen.qkv_bias and qwen.rope_theta == 1e6 and not qwen.tie_embeddings


@pytest.mark.parametrize('change, match', [
    ({'model_type': 'gpt2'}, 'model_type'),
    ({'rope_scaling': {'rope_type': 'llama3', 'factor': 8.0}}, 'RoPE scaling'),
    ({'hidden_act': 'relu'}, 'hidden_act'),
    ({'attention_bias': True}, 'attention_bias'),
])
def test_config_from_hf_rejects_unsupported(change, match):
  with pytest.raises(errors.UserError, match=match):
    hf_import.config_from_hf({**COMMON, 'model_type': 'llama', **change})


def test_config_from_hf_missing_field():
  hf = {**COMMON, 'model_type': 'llama'}
  del hf['hidden_size']
  with pytest.raises(errors.UserError, match='hidden_size'):
    hf_import.config_from_hf(hf)


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _edit_config(path, **changes):
  cfg = json.load(open(path / 'config.json'))
  cfg.update(changes)
  (path / 'config.json').write_text(json.dumps(cfg))


def test_bad_checkpoints_raise_clear_user_errors(root, tmp_path):
  from safetensors.numpy import save_file
  from safetensors import safe_open
  _, path = _saved('llama', root)

  with pytest.raises(errors.UserError, match='not a checkpoint directory'):
    hf_import.load_hf_checkpoint(tmp_path / 'nowhere')

  no_config = _copy(path, tmp_path / 'no_config')
  (no_config / 'config.json').unlink()
  with pytest.raises(errors.UserError, match='config.json'):
    hf_import.load_hf_checkpoint(no_config)

  gpt = _copy(path, tmp_path / 'gpt')
  _edit_config(gpt, model_type='gpt2')
  with pytest.raises(errors.UserError, match="model_type 'gpt2'"):
    hf_import.load_hf_checkpoint(gpt)

  wrong_shape = _copy(path, tmp_path / 'wrong_shape')
  _edit_config(wrong_shape, intermediate_size=48)
  with pytest.raises(errors.UserError, match=r"mlp\.(down|gate|up)_proj\.weight"):
    hf_import.load_hf_checkpoint(wrong_shape)

  with safe_open(f'{path}/model.safetensors', framework='numpy') as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}

  missing = tmp_path / 'missing'
  missing.mkdir()
  shutil.copy(f'{path}/config.json', missing)
  save_file({k: v for k, v in tensors.items() if k != 'model.norm.weight'},
            str(missing / 'model.safetensors'))
  with pytest.raises(errors.UserError, match="lacks 1 tensor.*'model.norm.weight'"):
    hf_import.load_hf_checkpoint(missing)

  unknown = tmp_path / 'unknown'
  unknown.mkdir()
  shutil.copy(f'{path}/config.json', unknown)
  save_file({**tensors, 'model.layers.2.mlp.up_proj.weight': tensors['model.norm.weight']},
            str(unknown / 'model.safetensors'))
  with pytest.raises(errors.UserError, match="unknown tensor 'model.layers.2.mlp.up_proj"):
    hf_import.load_hf_checkpoint(unknown)

  no_weights = tmp_path / 'no_weights'
  no_weights.mkdir()
  shutil.copy(f'{path}/config.json', no_weights)
  with pytest.raises(errors.UserError, match='no \\*.safetensors'):
    hf_import.load_hf_checkpoint(no_weights)


def test_load_checks_the_callers_config(root):
  _, path = _saved('gemma', root)
  config, expected = hf_import.load_hf_checkpoint(path)
  params = hf_import.load(path, config.replace(max_len=32))
  np.testing.assert_array_equal(params['embedding'], expected['embedding'])
  with pytest.raises(errors.UserError, match='mlp_dim=64 \\(config has 128\\)'):
    hf_import.load(path, config.replace(mlp_dim=128))
