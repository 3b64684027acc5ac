"""`restreact sample`: complete prompts with a model and print their perplexities.

  restreact sample --gin_file=gin/models/xs.gin --gin.EXP_DIR="'runs/demo'" \\
      --checkpoint_dir=gen_0/models/xs/checkpoints --vocab_path=vocab/spm.model \\
      --prompt "ORIGINAL_QUESTION = " --n=4 --temperature=0.5

  restreact sample --hf_dir=/path/to/llama --prompts_file=prompts.jsonl --json

  restreact sample --gin_file=gin/models/tiny.gin --random_init --prompt "hi"

The model is the `MODEL` gin macro (or the Hugging Face directory's
config.json); weights come from a trainer checkpoint (`--checkpoint_dir`), a
Hugging Face directory (`--hf_dir`), or, only when asked for smoke runs, a
random initialisation (`--random_init`). Relative paths are under `EXP_DIR`
when it is set. `--prompts_file` holds one prompt per line, or JSONL with a
`prompt` field (and optionally `prefix`) per line, or a JSON string per line.
Each sample prints with its perplexity under the unscaled model.
"""

from __future__ import annotations

import json as json_lib
import os
import pathlib
from typing import Any, Sequence

import gin

from restreact_jax import errors
from restreact_jax import gin_utils
from restreact_jax import llm
from restreact_jax.models import configs


def _exp_dir() -> str | None:
  try:
    return gin.query_parameter('EXP_DIR/macro.value')
  except ValueError:
    return None


def _under(path: str | None, base: str | None) -> str | None:
  if not path or base is None or os.path.isabs(path):
    return path or None
  return os.path.join(base, path)


def _flag(value: Any, kind: type, name: str) -> Any:
  """Converts a CLI string (or a gin value) to `kind`, or a one-line error."""
  if kind is bool:
    if isinstance(value, bool):
      return value
    text = str(value).lower()
    if text in ('1', 'true', 'yes', ''):
      return True
    if text in ('0', 'false', 'no'):
      return False
    raise errors.UserError(f'sample: --{name} must be true or false, got {value!r}')
  try:
    return kind(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'sample: --{name} must be {kind.__name__}, got {value!r}') from None


def read_prompts(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
  """Reads `(prompt, prefix)` pairs from a text or JSONL file.

  Args:
    path: one prompt per line; a line starting with `{` is a JSON object with
      `prompt` (and optionally `prefix`); one starting with `"` a JSON string
      (for prompts with newlines). Blank lines are skipped.

  Returns:
    The prompts in file order.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.UserError(f'sample: prompts file not found: {path}')
  prompts = []
  for lineno, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
    if not line.strip():
      continue
    if line.lstrip()[:1] not in ('{', '"'):
      prompts.append((line, ''))
      continue
    try:
      row = json_lib.loads(line)
    except json_lib.JSONDecodeError as e:
      raise errors.UserError(f'{path}:{lineno}: invalid JSON ({e.msg})') from None
    if isinstance(row, str):
      prompts.append((row, ''))
    elif isinstance(row, dict) and isinstance(row.get('prompt'), str):
      prompts.append((row['prompt'], str(row.get('prefix', ''))))
    else:
      raise errors.UserError(f'{path}:{lineno}: expected a JSON string or an object with a '
                             f'string "prompt"')
  if not prompts:
    raise errors.UserError(f'sample: no prompts in {path}')
  return prompts


def _build_llm(model: configs.TransformerConfig | None, vocab: Any, checkpoint_dir: str | None,
               hf_dir: str | None, random_init: bool, seed: int, mesh_shape: Sequence[int] | None,
               engine_kwargs: dict[str, Any]) -> Any:
  """The engine over the chosen weights."""
  from restreact_jax.agent import backends  # pylint: disable=g-import-not-at-top
  sources = [name for name, v in (('--checkpoint_dir', checkpoint_dir), ('--hf_dir', hf_dir),
                                  ('--random_init', random_init)) if v]
  if len(sources) != 1:
    raise errors.UserError(
        'sample: give exactly one of --checkpoint_dir, --hf_dir or --random_init '
        f'(got {", ".join(sources) or "none"})')
  if hf_dir is None and model is None:
    raise errors.UserError('sample: no model; pass --gin_file=gin/models/<size>.gin (which sets '
                           'MODEL) or bind sample.model')
  params = None
  if random_init:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from restreact_jax.models import transformer  # pylint: disable=g-import-not-at-top
    init = jax.jit(lambda key: transformer.Transformer(model).init(
        key, jnp.zeros((1, 1), jnp.int32))['params'])
    params = nn.unbox(init(jax.random.key(seed)))
  return backends.jax_backend(model, vocab=vocab, checkpoint_dir=checkpoint_dir, hf_dir=hf_dir,
                              params=params, mesh_shape=mesh_shape, **engine_kwargs)


@gin.configurable
def sample(model: configs.TransformerConfig | None = None,
           prompt: str | None = None,
           prompts_file: str | None = None,
           checkpoint_dir: str | None = None,
           hf_dir: str | None = None,
           vocab_path: str | None = None,
           random_init: bool | str = False,
           n: int | str = 1,
           temperature: float | str = 0.5,
           top_k: int | str = 0,
           top_p: float | str = 1.0,
           max_tokens: int | str = 64,
           stop: str | Sequence[str] = (llm.END_MARKER,),
           seed: int | str = 0,
           num_slots: int | str = 8,
           max_len: int | str | None = None,
           truncate_prompts: bool | str = False,
           mesh_shape: Sequence[int] | None = None,
           json: bool | str = False) -> list[list[llm.Sample]]:
  """Samples completions of prompts and prints them with their perplexities.

  Args:
    model: the architecture; unset, the `MODEL` gin macro.
    prompt: one prompt (use `--prompts_file` for several).
    prompts_file: see `read_prompts`.
    checkpoint_dir: a trainer checkpoint directory (relative: under EXP_DIR).
    hf_dir: a Hugging Face safetensors directory (its config.json is the model).
    vocab_path: a SentencePiece model (relative: under EXP_DIR); unset, bytes.
    random_init: random weights (smoke runs only).
    n: samples per prompt.
    temperature: 0 is greedy.
    top_k: 0 is off.
    top_p: 1 is off.
    max_tokens: new tokens per sample.
    stop: stop strings; a CLI value is one string ('' for none).
    seed: sampling seed (and the random-init seed).
    num_slots: concurrent decode slots.
    max_len: context length (default the model's).
    truncate_prompts: cut over-long prompts from the left instead of failing.
    mesh_shape: `('data', 'model')` mesh shape; unset, one device.
    json: print one JSON object per sample instead of text.

  Returns:
    Each prompt's samples.
  """
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  model = model if model is not None else gin_utils.macro_value('MODEL')
  if model is not None and not isinstance(model, configs.TransformerConfig):
    raise errors.UserError(f'sample: model must be a models.TransformerConfig, got '
                           f'{type(model).__name__}')
  if (prompt is None) == (prompts_file is None):
    raise errors.UserError('sample: give exactly one of --prompt or --prompts_file')
  base = _exp_dir()
  prompts = [(prompt, '')] if prompt is not None else read_prompts(_under(prompts_file, base))
  stops = (stop,) if isinstance(stop, str) else tuple(stop)
  seed = _flag(seed, int, 'seed')
  requests = [llm.SamplingRequest(prompt=text, prefix=prefix, n=_flag(n, int, 'n'),
                                  temperature=_flag(temperature, float, 'temperature'),
                                  top_k=_flag(top_k, int, 'top_k'),
                                  top_p=_flag(top_p, float, 'top_p'),
                                  max_tokens=_flag(max_tokens, int, 'max_tokens'),
                                  stop=tuple(s for s in stops if s), seed=seed)
              for text, prefix in prompts]
  for i, request in enumerate(requests):  # fail before loading any weights
    try:
      request.validate()
    except errors.UserError as e:
      raise errors.UserError(f'sample: prompt {i}: {e}') from None
  vocab = vocab_lib.load_vocabulary(_under(vocab_path, base))
  engine_kwargs = {'num_slots': _flag(num_slots, int, 'num_slots'),
                   'truncate_prompts': _flag(truncate_prompts, bool, 'truncate_prompts'),
                   'progress': True}
  if max_len is not None:
    engine_kwargs['max_len'] = _flag(max_len, int, 'max_len')
  engine = _build_llm(model, vocab, _under(checkpoint_dir, base), _under(hf_dir, base),
                      _flag(random_init, bool, 'random_init'), seed,
                      tuple(mesh_shape) if mesh_shape is not None else None, engine_kwargs)
  results = engine.generate(requests)
  as_json = _flag(json, bool, 'json')
  for i, samples in enumerate(results):
    if not as_json:
      print(f'=== prompt {i}: {prompts[i][0][-60:]!r}')
    for j, s in enumerate(samples):
      if as_json:
        print(json_lib.dumps({'prompt': i, 'sample': j, 'text': s.text,
                              'perplexity': s.perplexity, 'finish_reason': s.finish_reason,
                              'num_tokens': len(s.tokens)}))
      else:
        print(f'--- sample {j}: perplexity={s.perplexity:.3f} finish={s.finish_reason} '
              f'tokens={len(s.tokens)}')
        print(s.text)
  return results
