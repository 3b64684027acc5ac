"""The pretrained base: reading examples, `restreact pretrain_base`, and the loop using it."""

import json
import pathlib
import random
import subprocess
import sys

import pytest

from restreact_jax import errors
from restreact_jax.agent import name_masking
from restreact_jax.models import configs
from restreact_jax.rest import experiment
from restreact_jax.rest import config as config_lib
from restreact_jax.rest import loop
from restreact_jax.rest import phases
from restreact_jax.rest import pretrained
from restreact_jax.world import build
from restreact_jax.world import reading

ROOT = pathlib.Path(__file__).resolve().parents[1]
# gin/models/tiny.gin
TINY = dict(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=256)


@pytest.fixture(scope='module')
def world():
  return build.build_world(build.WorldConfig(seed=3, num_entities=40, num_train=20,
                                             num_dev=4, num_test=4))


def test_reading_example_states_the_supporting_sentences_with_their_links(world):
  corpus = [p.to_json() for p in world.passages]
  by_id = {p['id']: p for p in corpus}
  questions = [q.to_json() if hasattr(q, 'to_json') else q for q in world.questions['train']]
  rows = list(reading.examples(questions, corpus, seed=0))
  assert len(rows) == len(questions)
  for q, row in zip(questions, rows):
    inputs, targets = row['inputs'], row['targets']
    assert inputs.count(f'Question: {q["question"]}\n') == 2
    assert targets.endswith(f'\nAnswer: {q["answers"][0]}')
    shown = {int(n): body for n, body in
             (line[len('[link_id='):].split('] ', 1) for line in inputs.splitlines()
              if line.startswith('[link_id='))}
    facts = targets[len('Facts: '):].split('\nAnswer:')[0]
    for hop in q['hop_chain']:
      passage = by_id[hop['passage_id']]
      link = next(n for n, body in shown.items()
                  if body == f'{passage["title"]}: {passage["text"]}')
      sentence = reading.stating_sentence(passage['text'], hop['entity'], hop['value'])
      assert hop['value'] in sentence and sentence in passage['text']
      assert f'{sentence.rstrip(".")} [link_id={link}].' in facts
    # Distractors come on top of the supporting passages.
    assert len(shown) > len({h['passage_id'] for h in q['hop_chain']})


def test_reading_examples_are_masked_with_one_table_question_first(world):
  corpus = [p.to_json() for p in world.passages]
  questions = [q.to_json() if hasattr(q, 'to_json') else q for q in world.questions['train']]
  masker = name_masking.NameMasker(e.name for e in world.entities)
  plain = list(reading.examples(questions[:5], corpus, seed=1))
  masked = list(reading.examples(questions[:5], corpus, seed=1, mask=masker.mask_pair))
  for q, p, m in zip(questions, plain, masked):
    table = masker.table(p['inputs'], p['targets'])
    assert m['inputs'] == masker.mask(p['inputs'], table)
    assert m['targets'] == masker.mask(p['targets'], table)
    topic = q['hop_chain'][0]['entity']
    if topic in q['question']:
      assert table[topic] == '@1' or q['question'].index(topic) > 0
    assert not any(e.name in m['targets'] for e in world.entities if e.name in table)
  # Same seed, same examples; another seed draws other distractors or order.
  assert plain == list(reading.examples(questions[:5], corpus, seed=1))
  assert plain != list(reading.examples(questions[:5], corpus, seed=2))


def _pretrain_base(tmp_path):
  out, work = tmp_path / 'base', tmp_path / 'work'
  bindings = [
      "include 'gin/models/tiny.gin'",
      'VOCAB_SIZE = 1024', 'MAX_LEN = 640',
      f"pretrain_base.out_dir = '{out}'", f"pretrain_base.work_dir = '{work}'",
      "pretrain_base.models = {'tiny': %MODEL}",
      'pretrain_base.settings = @rest.TrainSettings()',
      'rest.TrainSettings.steps = 3', 'rest.TrainSettings.batch_size = 8',
      'rest.TrainSettings.warmup_steps = 1', 'rest.TrainSettings.checkpoint_period = 3',
      "rest.TrainSettings.task_feature_lengths = {'inputs': 192, 'targets': 48}",
      'pretrain_base.num_worlds = 2', 'pretrain_base.first_seed = 1000',
      "pretrain_base.world = {'num_entities': 40, 'num_train': 20, 'num_dev': 4, "
      "'num_test': 4}",
      'pretrain_base.vocab_size = 1024', 'pretrain_base.demo_worlds = 1',
      'pretrain_base.pilot_questions = 5']
  cmd = [sys.executable, '-m', 'restreact_jax.main', 'pretrain_base']
  cmd += [f'--gin.{b}' if not b.startswith('include') else '--gin_file=gin/models/tiny.gin'
          for b in bindings]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, work, proc.stdout


@pytest.fixture(scope='module')
def base_dir(tmp_path_factory):
  return _pretrain_base(tmp_path_factory.mktemp('pretrain'))


def test_pretrain_base_writes_a_loadable_base(base_dir):
  out, work, stdout = base_dir
  assert '[pretrain_base] worlds 2/2' in stdout
  base = pretrained.load(out)
  manifest = base.manifest
  ids = [json.loads(line)['id'] for line in open(work / 'reading.jsonl', encoding='utf-8')]
  questions = [i for i in ids if '/hop' not in i]
  assert manifest['examples'] == len(ids) and len(questions) == 2 * (20 + 4 + 4)
  # One short example per hop of every question, after the question's own.
  assert len(ids) - len(questions) >= 2 * len(questions)
  assert ids[1] == f'{ids[0]}/hop0'
  assert manifest['worlds']['first_seed'] == 1000 and manifest['name_masking'] is True
  assert base.sizes == ('tiny',) and manifest['models']['tiny']['steps'] == 3
  # Every size is scored on the reading examples of a held-out world's test questions.
  held_out = manifest['models']['tiny']['held_out']
  assert held_out['questions']['n'] == 4 and held_out['hops']['n'] >= 4
  assert held_out['too_long'] == 0
  for c in (held_out['questions'], held_out['hops']):
    assert 0 <= c['answer'] <= c['n'] and 0 <= c['facts'] <= c['n']
  assert (work / 'held-out-1002' / 'world' / 'world.json').is_file()
  # The vocabulary holds the placeholders as single pieces.
  from restreact_jax import vocab as vocab_lib
  vocab = vocab_lib.load_vocabulary(str(base.vocab_path))
  assert len(vocab.encode('@17')) == 1
  # The exported params are the trained ones.
  from restreact_jax import partitioning, trainer
  import jax
  config = configs.TransformerConfig(**manifest['models']['tiny']['config'])
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  rules = partitioning.logical_axis_rules(False)
  shipped = trainer.load_params(base.checkpoint('tiny'), config, mesh, rules)
  trained = trainer.load_params(work / 'tiny' / 'checkpoints', config, mesh, rules)
  assert phases.params_digest(shipped) == phases.params_digest(trained) == \
      manifest['models']['tiny']['params_digest']


def _rest_config(base_root, **kw):
  settings = dict(vocab_size=1024, max_len=256, **TINY)
  settings.update(kw.pop('model', {}))
  model = configs.TransformerConfig(**settings)
  fields = dict(world=build.WorldConfig(num_entities=40, num_train=20, num_dev=4, num_test=4),
                models={'tiny': model}, policy_size='tiny', vocab_size=256, pilot_questions=5,
                name_masking=True, pretrained_base=str(base_root), progress=False)
  fields.update(kw)
  return config_lib.RestConfig(**fields)


def test_the_loop_installs_the_base_vocabulary_and_weights(base_dir, tmp_path):
  out, _, _ = base_dir
  nano = configs.TransformerConfig(vocab_size=1024, embed_dim=32, num_layers=1, num_heads=2,
                                   num_kv_heads=1, head_dim=16, mlp_dim=64, max_len=256)
  cfg = _rest_config(out, student_sizes=('nano',),
                     models={'tiny': _rest_config(out).models['tiny'], 'nano': nano},
                     pretrain=phases.TrainSettings(steps=2, batch_size=8, warmup_steps=1,
                                                   checkpoint_period=2,
                                                   task_feature_lengths={'targets': 64}))
  cfg.validate()
  exp = experiment.Experiment(tmp_path / 'exp', log=lambda _: None)
  steps = loop._Steps(cfg, exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                      lambda _: None)
  steps.world_and_index()
  steps.vocabulary()
  steps.pretrain('tiny')
  # A size the base does not hold is pretrained on the world, with the base's vocabulary.
  steps.pretrain('nano')
  assert exp.record('base/nano').result['step'] == 2
  assert 'pretrained_base' in exp.record('base/tiny').result
  root = tmp_path / 'exp'
  assert (root / 'vocab' / 'spm.model').read_bytes() == (out / 'spm.model').read_bytes()
  from restreact_jax import partitioning, trainer
  import jax
  base = pretrained.load(out)
  config = steps.cfg.models['tiny']
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  params = trainer.load_params(root / 'base' / 'tiny' / 'checkpoints', config, mesh,
                               partitioning.logical_axis_rules(False))
  assert phases.params_digest(params) == base.manifest['models']['tiny']['params_digest']


def test_ordered_years_write_their_own_seed_on_the_same_base(base_dir, tmp_path):
  out, _, _ = base_dir
  seeds = {}
  for mode in (True, 'ordered_years'):
    cfg = _rest_config(out, name_masking=mode)
    cfg.validate()
    exp = experiment.Experiment(tmp_path / str(mode), log=lambda _: None)
    steps = loop._Steps(cfg, exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                        lambda _: None)
    steps.world_and_index()
    steps.vocabulary()
    seeds[mode] = (exp.fingerprint_of('gen_0/seed'),
                   (tmp_path / str(mode) / 'gen_0' / 'seed' / 'seed.tfrecord').read_bytes())
  # The same world and demonstrations, masked another way: another phase.
  assert seeds[True][0] != seeds['ordered_years'][0]
  assert seeds[True][1] != seeds['ordered_years'][1]
  with pytest.raises(errors.UserError, match="rest.name_masking = 'sorted'"):
    _rest_config(out, name_masking='sorted').validate()


def test_an_unusable_base_is_refused_with_one_line(base_dir, tmp_path):
  out, _, _ = base_dir
  with pytest.raises(errors.UserError, match='no manifest.json'):
    _rest_config(tmp_path).validate()
  with pytest.raises(errors.UserError, match=r"embed_dim 48 \(base: 64\)"):
    _rest_config(out, model={'embed_dim': 48}).validate()
  with pytest.raises(errors.UserError, match='name_masking=True'):
    _rest_config(out, name_masking=False).validate()
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'manifest.json').write_text(json.dumps(pretrained.load(out).manifest))
  (broken / 'spm.model').write_bytes(b'not the vocabulary')
  with pytest.raises(errors.UserError, match='does not match'):
    pretrained.load(broken)
  (broken / 'manifest.json').write_text('{"format": 1, "models": {')
  with pytest.raises(errors.UserError, match='not a readable manifest'):
    pretrained.load(broken)
