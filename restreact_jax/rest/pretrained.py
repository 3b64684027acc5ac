"""A pretrained base: a vocabulary and base-LM weights made once, shipped, reused.

The paper starts every experiment from a pretrained PaLM 2. Here the stand-in
is a directory written by `restreact pretrain_base`:

```
BASE/
  manifest.json   what was trained on what: worlds, examples, settings,
                  every size's architecture, steps, last loss and its
                  reading accuracy on a held-out world
  spm.model       the SentencePiece vocabulary every size reads
  <size>/         an Orbax checkpoint holding only the params of <size>
```

With `rest.pretrained_base = BASE` the loop's `vocab` phase installs BASE's
vocabulary instead of training one on the world, and the `base/<size>` phase
of each size BASE holds installs its weights instead of pretraining on the
world's corpus (other sizes are pretrained there as before, with BASE's
vocabulary); every later phase is unchanged. A size whose architecture differs from the one BASE
holds is refused with one line, before anything is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
from typing import Any, Mapping

from restreact_jax import errors

MANIFEST = 'manifest.json'
_REPO = pathlib.Path(__file__).resolve().parents[2]
VOCAB = 'spm.model'
FORMAT = 1
# The fields that must agree for weights to load into a model (max_len, dtypes
# and the family label may differ; the loop gives every model the installed
# vocabulary's size).
ARCHITECTURE = ('embed_dim', 'num_layers', 'num_heads', 'num_kv_heads',
                'head_dim', 'mlp_dim', 'activation', 'norm_offset', 'tie_embeddings',
                'scale_embeddings', 'qkv_bias')


def file_sha256(path: str | pathlib.Path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def architecture(config: Any) -> dict[str, Any]:
  """The fields of a `TransformerConfig` (or its dict) weights depend on."""
  fields = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
  return {k: fields.get(k) for k in ARCHITECTURE}


@dataclasses.dataclass(frozen=True)
class PretrainedBase:
  """A pretrained-base directory and its manifest."""
  root: pathlib.Path
  manifest: Mapping[str, Any]

  @property
  def vocab_path(self) -> pathlib.Path:
    return self.root / VOCAB

  @property
  def sizes(self) -> tuple[str, ...]:
    return tuple(sorted(self.manifest.get('models', {})))

  def checkpoint(self, size: str) -> pathlib.Path:
    return self.root / str(self.manifest['models'][size]['checkpoint'])

  def check_model(self, size: str, config: Any) -> None:
    """Raises `UserError` unless `size`'s weights load into `config`."""
    models = self.manifest.get('models', {})
    if size not in models:
      raise errors.UserError(
          f'rest.pretrained_base {self.root} has no weights for size {size!r} '
          f'(it has: {", ".join(self.sizes) or "none"})')
    want, have = architecture(models[size]['config']), architecture(config)
    diff = [f'{k} {have[k]!r} (base: {want[k]!r})' for k in ARCHITECTURE if want[k] != have[k]]
    if diff:
      raise errors.UserError(f'rest.models[{size!r}] does not match rest.pretrained_base '
                             f'{self.root}: {", ".join(diff)}')

  def install_vocab(self, out: pathlib.Path) -> pathlib.Path:
    """Copies the vocabulary to `out/spm.model`."""
    path = pathlib.Path(out) / VOCAB
    shutil.copyfile(self.vocab_path, path)
    return path

  def install_checkpoint(self, size: str, out: pathlib.Path) -> pathlib.Path:
    """Copies `size`'s checkpoint to `out/checkpoints` (replacing a partial one)."""
    dst = pathlib.Path(out) / 'checkpoints'
    if dst.exists():
      shutil.rmtree(dst)
    shutil.copytree(self.checkpoint(size), dst)
    return dst

  def describe(self) -> dict[str, Any]:
    """What a phase's fingerprint records of the base."""
    return {'vocab_sha256': self.manifest.get('vocab_sha256'),
            'models': {s: self.manifest['models'][s].get('params_digest') for s in self.sizes}}


def load(path: str | pathlib.Path) -> PretrainedBase:
  """Reads and checks a pretrained-base directory; one-line `UserError` if unusable."""
  root = pathlib.Path(path)
  if not root.is_absolute() and not root.exists() and (_REPO / root).exists():
    root = _REPO / root  # a relative path resolves from the repository root too
  manifest_path = root / MANIFEST
  if not manifest_path.is_file():
    raise errors.UserError(f'rest.pretrained_base: no {MANIFEST} in {root} '
                           '(write one with `restreact pretrain_base`)')
  try:
    manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.UserError(f'{manifest_path}: not a readable manifest ({e})') from None
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    raise errors.UserError(f'{manifest_path}: expected a format {FORMAT} manifest')
  models = manifest.get('models')
  if not isinstance(models, dict) or not models:
    raise errors.UserError(f'{manifest_path}: lists no models')
  base = PretrainedBase(root, manifest)
  if not base.vocab_path.is_file():
    raise errors.UserError(f'rest.pretrained_base: {base.vocab_path} is missing')
  if manifest.get('vocab_sha256') != file_sha256(base.vocab_path):
    raise errors.UserError(f'{base.vocab_path} does not match {manifest_path} (vocab_sha256)')
  for size, entry in models.items():
    if not isinstance(entry, dict) or not {'config', 'checkpoint'} <= set(entry):
      raise errors.UserError(f'{manifest_path}: models[{size!r}] needs "config" and '
                             '"checkpoint"')
    if not base.checkpoint(size).is_dir():
      raise errors.UserError(f'rest.pretrained_base: {base.checkpoint(size)} is missing')
  return base


def export_params(src_checkpoints: str | pathlib.Path, config: Any,
                  dst: str | pathlib.Path) -> str:
  """Writes the latest params of a training checkpoint as a params-only checkpoint.

  The optimizer state stays behind (a third of the size); the trainer's
  `init_checkpoint` and the inference backends read params only.

  Returns:
    The params digest.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from restreact_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from restreact_jax import partitioning  # pylint: disable=g-import-not-at-top
  from restreact_jax import trainer  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import phases  # pylint: disable=g-import-not-at-top
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  params = trainer.load_params(src_checkpoints, config, mesh, partitioning.logical_axis_rules(False))
  dst = pathlib.Path(dst)
  if dst.exists():
    shutil.rmtree(dst)
  with checkpoints.Checkpointer(dst, max_to_keep=1) as ckpt:
    ckpt.save({'params': params}, checkpoints.Meta(step=0, data_position=0, config_gin=''))
    ckpt.wait()
  return phases.params_digest(params)


def reading_accuracy(config: Any, checkpoint: str | pathlib.Path, vocab_path: str | pathlib.Path,
                     examples: Any, max_tokens: int = 96) -> dict[str, dict[str, int]]:
  """Greedy-decodes reading examples; counts exact answers and exact fact lines.

  Args:
    config: the model's `TransformerConfig`.
    checkpoint: its (params) checkpoint directory.
    vocab_path: the SentencePiece model.
    examples: `{"id", "inputs", "targets"}` (`world.reading.examples`); ids
      with `/hop` are counted apart from whole questions.
    max_tokens: decode budget per example; an example whose prompt leaves
      less room than that in `config.max_len` is not scored.

  Returns:
    `{"questions": {"n", "answer", "facts"}, "hops": {...}, "too_long": int}`.
  """
  from restreact_jax import llm  # pylint: disable=g-import-not-at-top
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import backends  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.load_vocabulary(str(vocab_path))
  examples = list(examples)
  fits = [ex for ex in examples
          if len(vocab.encode(ex['inputs'])) + max_tokens <= config.max_len]
  engine = backends.jax_backend(config, vocab=vocab, checkpoint_dir=str(checkpoint),
                                num_slots=64, max_len=config.max_len)
  outs = engine.generate([llm.SamplingRequest(prompt=ex['inputs'], temperature=0.0,
                                              max_tokens=max_tokens, stop=('\n\n',))
                          for ex in fits])
  counts = {'questions': {'n': 0, 'answer': 0, 'facts': 0},
            'hops': {'n': 0, 'answer': 0, 'facts': 0}, 'too_long': len(examples) - len(fits)}
  for ex, samples in zip(fits, outs):
    got, want = samples[0].text.strip(), ex['targets']
    c = counts['hops' if '/hop' in str(ex['id']) else 'questions']
    c['n'] += 1
    c['answer'] += got.rpartition('Answer:')[2].strip() == want.rpartition('Answer:')[2].strip()
    c['facts'] += got.partition('\nAnswer')[0] == want.partition('\nAnswer')[0]
  return counts
