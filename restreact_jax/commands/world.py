"""`restreact world`: draw the synthetic world and build its search index.

  restreact world --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'"

Writes `EXP_DIR/world/` (corpus.jsonl, entities.jsonl, questions/*.jsonl,
world.json) and the BM25 index `EXP_DIR/search/bm25/`, each atomically. A rerun
with the same config (same fingerprint in world.json, index built from the
same corpus bytes) does nothing.
"""

from __future__ import annotations

import pathlib
from typing import Mapping

import gin
import tqdm

from restreact_jax import gin_utils
from restreact_jax.search import bm25
from restreact_jax.world import build


def _as_bool(value: bool | str) -> bool:
  return value if isinstance(value, bool) else str(value).lower() in ('1', 'true', 'yes')


@gin.configurable
def world(exp_dir: str = gin.REQUIRED,
          seed: int = 0,
          num_entities: int = 400,
          num_train: int = 300,
          num_dev: int = 60,
          num_test: int = 60,
          dev_fraction: float = 0.15,
          test_fraction: float = 0.15,
          qtype_weights: Mapping[str, float] | None = None,
          force: bool | str = False) -> pathlib.Path:
  """Builds `EXP_DIR/world` and `EXP_DIR/search/bm25` unless already current.

  Args:
    exp_dir: the experiment directory.
    seed: the world seed (`WORLD_SEED`).
    num_entities: generated entities (the canon comes on top).
    num_train: questions in the unlabeled training pool.
    num_dev: dev questions.
    num_test: test questions.
    dev_fraction: share of entities reserved for dev topics.
    test_fraction: share of entities reserved for test topics.
    qtype_weights: question type -> share of every split (None: the default
      mix, `world.questions.QTYPE_WEIGHTS`).
    force: rebuild even when the outputs are current.

  Returns:
    The world directory.
  """
  config = build.WorldConfig(seed=int(seed), num_entities=int(num_entities),
                             num_train=int(num_train), num_dev=int(num_dev),
                             num_test=int(num_test), dev_fraction=float(dev_fraction),
                             test_fraction=float(test_fraction),
                             qtype_weights=dict(qtype_weights) if qtype_weights else None)
  config.validate()
  root = pathlib.Path(exp_dir)
  world_dir, index_dir = root / 'world', root / 'search' / 'bm25'
  gin_utils.write_config(root)
  force = _as_bool(force)
  summary = build.read_summary(world_dir)
  with tqdm.tqdm(total=2, desc='world', unit='phase') as bar:
    if force or summary is None or summary.get('fingerprint') != config.fingerprint():
      bar.set_postfix_str('generating')
      built = build.build_world(config)
      build.write_world(built, world_dir)
      summary = built.summary()
      print(f'world: wrote {world_dir}')
    else:
      print(f'world: {world_dir} is current (fingerprint {config.fingerprint()}), skipped')
    bar.update()
    meta = bm25.index_meta(index_dir)
    corpus = world_dir / 'corpus.jsonl'
    if force or meta is None or meta.get('corpus_sha256') != bm25.file_sha256(corpus):
      bar.set_postfix_str('indexing')
      bm25.build_index(corpus, index_dir)
      print(f'world: indexed {corpus} into {index_dir}')
    else:
      print(f'world: index {index_dir} is current, skipped')
    bar.update()
  counts = summary['counts']
  print(f'world: {counts["entities"]} entities, {counts["passages"]} passages, '
        f'questions {counts["questions"]}')
  return world_dir
