"""`restreact pretrain_base`: the shipped base LM, made once from other worlds.

  restreact pretrain_base --gin_file=gin/experiments/pretrain_base.gin

Draws `num_worlds` worlds from seeds `first_seed, first_seed + 1, ...` (set
apart from the seeds experiments use), writes reading-comprehension examples
of all their questions (`world.reading`), name-masked as the loop masks, trains
one SentencePiece vocabulary on them and on a few worlds' agent
demonstrations (so the agent's code tokenises as compactly as in a trained
vocabulary), pretrains every size of `models` on the examples, and writes the
pretrained-base directory `out_dir` (`rest/pretrained.py`): the vocabulary,
each size's params and a manifest. Work files go to `work_dir`; a rerun reuses
the examples and vocabulary there (delete `work_dir` to change them) and
resumes training from its checkpoints. Progress: a line per world and the
trainer's bar (step, rate, ETA, loss, accuracy).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import time
from typing import Any, Mapping

import gin

from restreact_jax import errors, jsonl
from restreact_jax.rest import phases
from restreact_jax.rest import pretrained as pretrained_lib
from restreact_jax.rest.phases import TrainSettings

TASK = 'restreact_reading'


def _world_examples(work: pathlib.Path, seeds: range, world_kwargs: Mapping[str, Any],
                    demo_worlds: int, pilot_questions: int,
                    hops: bool) -> tuple[pathlib.Path, list[pathlib.Path]]:
  """Writes `work/reading.jsonl` (and agent demonstrations of the first worlds)."""
  from restreact_jax.agent import name_masking  # pylint: disable=g-import-not-at-top
  from restreact_jax.world import build, reading  # pylint: disable=g-import-not-at-top
  path = work / 'reading.jsonl'
  demos = [work / f'world-{s}' / 'gen_0' / 'seed' / 'seed.jsonl' for s in seeds[:demo_worlds]]
  if path.is_file() and all(d.is_file() for d in demos):
    return path, demos
  start, rows = time.time(), 0
  with open(path.with_suffix('.tmp'), 'w', encoding='utf-8') as f:
    for i, seed in enumerate(seeds):
      root = work / f'world-{seed}'
      if build.read_summary(root / 'world') is None:
        phases.build_world(root / 'world', build.WorldConfig(seed=seed, **world_kwargs))
      masker = name_masking.from_world(root)
      questions = [q for split in ('train', 'dev', 'test')
                   for q in build.load_questions(root / 'world', split)]
      for ex in reading.examples(questions, build.load_corpus(root / 'world'), seed,
                                 masker.mask_pair, hops=hops):
        f.write(json.dumps(ex, sort_keys=True) + '\n')
        rows += 1
      if i < demo_worlds:
        phases.build_search_index(root / 'search' / 'bm25', root / 'world' / 'corpus.jsonl')
        out = root / 'gen_0' / 'seed'
        out.mkdir(parents=True, exist_ok=True)
        phases.write_seed(out, 'world', exp_dir=root, pilot_questions=pilot_questions,
                          name_masking=True, max_searches=5)
      rate = (i + 1) / max(time.time() - start, 1e-6)
      print(f'[pretrain_base] worlds {i + 1}/{len(seeds)}, {rows} examples, '
            f'{rate:.1f} worlds/s, ETA {(len(seeds) - i - 1) / rate:.0f}s', flush=True)
  path.with_suffix('.tmp').replace(path)
  return path, demos


def _held_out(work: pathlib.Path, seed: int, world_kwargs: Mapping[str, Any],
              questions: int) -> list[dict[str, str]]:
  """Reading examples of `questions` test questions of a world not trained on."""
  from restreact_jax.agent import name_masking  # pylint: disable=g-import-not-at-top
  from restreact_jax.world import build, reading  # pylint: disable=g-import-not-at-top
  if questions <= 0:
    return []
  root = work / f'held-out-{seed}'
  if build.read_summary(root / 'world') is None:
    phases.build_world(root / 'world', build.WorldConfig(seed=seed, **world_kwargs))
  test = build.load_questions(root / 'world', 'test')[:questions]
  return list(reading.examples(test, build.load_corpus(root / 'world'), seed,
                               name_masking.from_world(root).mask_pair, hops=True))


@gin.configurable
def pretrain_base(out_dir: str = gin.REQUIRED,
                  work_dir: str = gin.REQUIRED,
                  models: Mapping[str, Any] = gin.REQUIRED,
                  settings: TrainSettings = gin.REQUIRED,
                  first_seed: int = 1000,
                  num_worlds: int = 40,
                  world: Mapping[str, Any] | None = None,
                  vocab_size: int = 1536,
                  vocab_model_type: str = 'bpe',
                  demo_worlds: int = 3,
                  pilot_questions: int = 100,
                  hop_examples: bool = True,
                  eval_questions: int = 40,
                  mesh_shape: tuple[int, ...] = (-1, 1)) -> pathlib.Path:
  """Writes the pretrained-base directory `out_dir`; returns it.

  Args:
    out_dir: the pretrained base (`rest.pretrained_base`).
    work_dir: worlds, examples, vocabulary and training checkpoints.
    models: size → `TransformerConfig` (vocab_size is set to the vocabulary's).
    settings: the pretraining run of every size.
    first_seed: the first world seed; the worlds are
      `first_seed .. first_seed + num_worlds - 1`.
    num_worlds: how many worlds.
    world: `WorldConfig` fields of every world (entities, question counts).
    vocab_size: SentencePiece pieces.
    vocab_model_type: 'bpe' or 'unigram'.
    demo_worlds: worlds whose agent demonstrations join the vocabulary's
      training text (not the pretraining examples).
    pilot_questions: demonstrated questions per such world.
    hop_examples: also one short example per hop of every question
      (`world.reading.hop_example`).
    eval_questions: after training, every size greedy-decodes the reading
      examples (with hops) of this many test questions of a held-out world
      (seed `first_seed + num_worlds`); the manifest records how many
      answers and fact lines it got exactly right (0: skip).
    mesh_shape: the training mesh.
  """
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import name_masking  # pylint: disable=g-import-not-at-top
  from tasks import common  # pylint: disable=g-import-not-at-top
  if int(num_worlds) < 1 or not models:
    raise errors.UserError('pretrain_base needs num_worlds >= 1 and at least one model')
  out, work = pathlib.Path(out_dir), pathlib.Path(work_dir)
  work.mkdir(parents=True, exist_ok=True)
  seeds = range(int(first_seed), int(first_seed) + int(num_worlds))
  examples, demos = _world_examples(work, seeds, dict(world or {}), int(demo_worlds),
                                    int(pilot_questions), bool(hop_examples))
  vocab_dir = work / 'vocab'
  if not (vocab_dir / pretrained_lib.VOCAB).is_file():
    vocab_dir.mkdir(exist_ok=True)
    phases.train_vocabulary(vocab_dir, [examples, *demos], int(vocab_size),
                            list(name_masking.PLACEHOLDERS), vocab_model_type)
  vocab_path = vocab_dir / pretrained_lib.VOCAB
  pieces = int(vocab_lib.load_vocabulary(str(vocab_path)).vocab_size)
  record = examples.with_suffix('.tfrecord')
  if not record.is_file():
    common.write_examples(record, ({'inputs': r['inputs'], 'targets': r['targets']}
                                   for r in jsonl.iter_jsonl(examples)))
  common.register_text_to_text_task(TASK, [str(record)], str(vocab_path))
  held_out = _held_out(work, int(first_seed) + int(num_worlds), dict(world or {}),
                       int(eval_questions))
  out.mkdir(parents=True, exist_ok=True)
  entries = {}
  for size, model in models.items():
    model = dataclasses.replace(model, vocab_size=pieces)
    print(f'[pretrain_base] {size}: {settings.steps} steps', flush=True)
    result = phases.train(work / size, model=model, task=TASK, settings=settings,
                          mesh_shape=mesh_shape, init_checkpoint=None,
                          config_text='', progress=True)
    digest = pretrained_lib.export_params(work / size / 'checkpoints', model, out / size)
    entries[size] = {'config': dataclasses.asdict(model), 'checkpoint': size,
                     'steps': result['step'], 'loss': result['loss'],
                     'accuracy': result['accuracy'], 'params_digest': digest}
    if held_out:
      entries[size]['held_out'] = pretrained_lib.reading_accuracy(model, out / size, vocab_path,
                                                                  held_out)
      print(f'[pretrain_base] {size} on a held-out world: {entries[size]["held_out"]}',
            flush=True)
  shutil.copyfile(vocab_path, out / pretrained_lib.VOCAB)
  manifest = {
      'format': pretrained_lib.FORMAT,
      'vocab_sha256': pretrained_lib.file_sha256(out / pretrained_lib.VOCAB),
      'name_masking': True,
      'models': entries,
      'worlds': {'first_seed': int(first_seed), 'num_worlds': int(num_worlds),
                 'config': dict(world or {})},
      'examples': sum(1 for _ in jsonl.iter_jsonl(examples)),
      'hop_examples': bool(hop_examples),
      'settings': dataclasses.asdict(settings),
      'command': 'restreact pretrain_base --gin_file=gin/experiments/pretrain_base.gin',
  }
  (out / pretrained_lib.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + '\n',
                                             encoding='utf-8')
  print(f'[pretrain_base] wrote {out} ({", ".join(entries)})')
  return out
