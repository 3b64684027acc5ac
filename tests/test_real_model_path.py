"""End to end: `restreact bamboogle` with an imported Gemma checkpoint and HTTP search.

A tiny `transformers` GemmaForCausalLM (float32, safetensors, its own
SentencePiece `tokenizer.model`) stands in for a real checkpoint, and a local
HTTP server answers searches from a BM25 index over a generated world corpus.
A random model only writes unparseable text, which would leave the search and
judge paths unexercised; so the fixture model is first taught, with a few
hundred torch steps, to emit one valid action per step type and a `True`
verdict for the judge prompt (the matcher would say False), which makes every
door observable: the queries the server saw, the judge prompts the engine saw,
and the verdict sources in `summary.json`.
"""

import http.server
import json
import pathlib
import threading
import urllib.parse

import pytest

pytestmark = pytest.mark.slow

MAX_LEN = 128
MAX_TOKENS = 48
JUDGE_MAX_TOKENS = 32
NUM_QUESTIONS = 3
RUNS = 2
KEY_ENV = 'RESTREACT_TEST_SEARCH_KEY'
KEY = 'not-a-real-key'
QUERY = 'founded'
ANSWER = 'unknown [link_id=1]'

TARGETS = {
    'decision': ("ACTION_SELECTED = ActionWrapper(thoughts='Look it up.', "
                 f"action=Search(query='{QUERY}'))"),
    'summarize': ("ACTION_SELECTED: LinkSelection = LinkSelection(grounded_summarization="
                  "'[link_id=1] says so.', thoughts='Link 1.', selected_link_ids=[1])"),
    'answer': f"ACTION_SELECTED: Answer = Answer(thoughts='Link 1.', answer='{ANSWER}')",
    'relevance': 'ACTION_SELECTED: Command = Check_Answer(passed=True)',
    'grounding': 'ACTION_SELECTED: Command = Check_Answer(passed=True)',
    'judge': 'Check_Answer(ORIGINAL_QUESTION, ANSWER, REF_ANSWER) = True',
}


class _SearchServer:
  """A JSON search API over a BM25 index that records every query it answers."""

  def __init__(self, index_dir):
    from restreact_jax.search import bm25
    tool = bm25.BM25Search(index_dir)
    self.queries = []
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # noqa: N802 (http.server's name)
        if self.headers.get('Authorization') != f'Bearer {KEY}':
          self.send_error(401)
          return
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        query, k = params['q'][0], int(params['n'][0])
        outer.queries.append(query)
        hits = tool.search([query], k)[0]
        body = json.dumps({'results': [
            {'title': h.link_text, 'snippet': h.snippet, 'url': h.doc_id} for h in hits]})
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(body.encode())

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/search?q={{query}}&n={{k}}'
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def stop(self):
    self.httpd.shutdown()
    self.httpd.server_close()


def _fixed_policy(request, i):
  """The scripted actions the fixture model is taught (one per step type)."""
  del i
  from restreact_jax.agent import prompts
  return TARGETS[prompts.detect_step_type(request.prompt)]


def _teaching_examples(index_dir, questions, vocab, bos_id):
  """(prompt tokens, target tokens) exactly as the engine will see them."""
  from restreact_jax import decoding
  from restreact_jax.agent import prompts
  from restreact_jax.agent import rollout as rollout_lib
  from restreact_jax.agent.agent import AgentConfig
  from restreact_jax.agent.backends import ScriptedLLM
  from restreact_jax.evaluation import judge_prompt
  from restreact_jax.llm import SamplingRequest
  from restreact_jax.search import bm25
  llm = ScriptedLLM(_fixed_policy)
  config = AgentConfig(num_samples=1, max_tokens=MAX_TOKENS, max_searches=1)
  rollout_lib.rollout(llm, bm25.BM25Search(index_dir), [(q['id'], q['question']) for q in questions],
                      out_dir=None, prompter=prompts.Prompter('open_domain', None),
                      config=config, show_progress=False)
  requests = [(r, _fixed_policy(r, 0)) for r in llm.requests]
  for q in questions:
    prompt = judge_prompt.render_judge_prompt(q['question'], ANSWER, q['answers'][0])
    requests.append((SamplingRequest(prompt, max_tokens=JUDGE_MAX_TOKENS,
                                     prefix=judge_prompt.prompt_prefix(None)), TARGETS['judge']))
  examples = []
  for request, target in requests:
    prepared = decoding.prepare(vocab, request, max_len=MAX_LEN, bos_id=bos_id, truncate=True)
    examples.append((list(prepared.tokens), list(vocab.encode(target + '  # [END]'))))
  return examples


def _teach(model, examples, steps=300):
  """Teacher-forced fitting of the targets only (the prompt is context)."""
  import torch
  torch.manual_seed(0)
  # One thread: on a shared small CPU, more threads only contend.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  length = max(len(p) + len(t) for p, t in examples)
  ids = torch.zeros((len(examples), length), dtype=torch.long)
  labels = torch.full((len(examples), length), -100, dtype=torch.long)
  mask = torch.zeros((len(examples), length), dtype=torch.long)
  for row, (p, t) in enumerate(examples):
    seq = p + t
    ids[row, :len(seq)] = torch.tensor(seq)
    labels[row, len(p):len(seq)] = torch.tensor(t)
    mask[row, :len(seq)] = 1
  opt = torch.optim.Adam(model.parameters(), lr=1e-2)
  model.train()
  loss = None
  for _ in range(steps):
    opt.zero_grad()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()
    if loss.item() < 2e-3:
      break
  model.eval()
  torch.set_num_threads(threads)
  return float(loss.item())


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """World corpus, BM25 index, search server, SentencePiece and a taught Gemma."""
  import torch
  import transformers
  from restreact_jax import vocab as vocab_lib
  from restreact_jax.datasets import benchmarks
  from restreact_jax.search import bm25
  from restreact_jax.world import build

  root = tmp_path_factory.mktemp('real_model')
  world_dir = root / 'world'
  build.write_world(build.build_world(build.WorldConfig(
      seed=0, num_entities=20, num_train=0, num_dev=0, num_test=0)), world_dir)
  index_dir = root / 'bm25'
  bm25.build_index(world_dir / 'corpus.jsonl', index_dir)
  questions = benchmarks.load('bamboogle')[:NUM_QUESTIONS]

  # The tokenizer: SentencePiece over the corpus and the prompts it will read.
  from restreact_jax.agent import prompts
  text = root / 'prompts.txt'
  text.write_text('\n'.join([*prompts.Prompter('open_domain', None).preambles.values(),
                             *TARGETS.values(), *(q['question'] for q in questions)]))
  hf_dir = root / 'gemma'
  vocab_lib.train_sentencepiece([world_dir / 'corpus.jsonl', text], hf_dir / 'tokenizer.model',
                                vocab_size=600)
  vocab = vocab_lib.load_vocabulary(hf_dir / 'tokenizer.model')

  config = transformers.GemmaConfig(
      vocab_size=vocab.vocab_size, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
      max_position_embeddings=MAX_LEN, pad_token_id=0, eos_token_id=1, bos_token_id=0,
      hidden_act='gelu_pytorch_tanh')
  torch.manual_seed(0)
  model = transformers.GemmaForCausalLM(config).to(torch.float32)
  examples = _teaching_examples(index_dir, questions, vocab, bos_id=0)
  loss = _teach(model, examples)
  assert loss < 0.05, f'the fixture model did not learn its actions (loss {loss})'
  model.save_pretrained(hf_dir, safe_serialization=True)
  server = _SearchServer(index_dir)
  yield {'root': root, 'hf_dir': hf_dir, 'server': server, 'questions': questions}
  server.stop()


def _argv(exp_dir, hf_dir, url, *extra):
  return ['bamboogle', '--gin_file=gin/experiments/bamboogle_gemma_2b.gin',
          f"--gin.EXP_DIR='{exp_dir}'", f"--gin.HF_DIR='{hf_dir}'" if hf_dir else '--gin.HF_DIR=None',
          f"--gin.SEARCH_URL='{url}'", f"--gin.SEARCH_API_KEY_ENV='{KEY_ENV}'",
          "--gin.DATASETS=['bamboogle']", f'--gin.LIMIT={NUM_QUESTIONS}', f'--gin.RUNS={RUNS}',
          "--gin.DTYPE='float32'", '--gin.MESH_SHAPE=(1, 1)', '--gin.NUM_SLOTS=8',
          f'--gin.MAX_LEN={MAX_LEN}', f'--gin.MAX_TOKENS={MAX_TOKENS}', '--gin.MAX_SEARCHES=1',
          f'--gin.bamboogle.judge_max_tokens={JUDGE_MAX_TOKENS}',
          '--gin.search.HttpSearchConfig.retries=0', '--progress=false', *extra]


def _main(argv):
  """One CLI invocation in this process, from a clean gin config."""
  import gin
  from restreact_jax import main as main_lib
  gin.clear_config(clear_constants=True)
  return main_lib.main(argv)


def _error_lines(capsys):
  err = capsys.readouterr().err
  return [line for line in err.splitlines() if line.startswith('restreact: error:')]


def test_imported_gemma_with_http_search_and_llm_judge(setup, tmp_path, monkeypatch, capsys):
  from restreact_jax.agent import trajectory as trajectory_lib
  from restreact_jax.evaluation import judge_prompt
  monkeypatch.setenv(KEY_ENV, KEY)
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parent.parent)
  server = setup['server']
  server.queries.clear()
  exp = tmp_path / 'exp'

  # The judge runs on the policy's own engine: record what it is asked.
  from restreact_jax import engine as engine_lib
  seen = []
  original = engine_lib.Engine.generate

  def recording(self, requests):
    seen.extend(r.prompt for r in requests)
    return original(self, requests)

  monkeypatch.setattr(engine_lib.Engine, 'generate', recording)
  assert _main(_argv(exp, setup['hf_dir'], server.url)) == 0

  # Every question x run has a trajectory in the current schema.
  shards = sorted((exp / 'bamboogle' / 'rollouts').glob('shard-*.jsonl'))
  trajs = [json.loads(line) for p in shards for line in p.read_text().splitlines()]
  keys = sorted((t['question_id'], t['repeat']) for t in trajs)
  ids = [q['id'] for q in setup['questions']]
  assert keys == sorted((i, r) for i in ids for r in range(RUNS))
  assert {t['schema_version'] for t in trajs} == {trajectory_lib.SCHEMA_VERSION}
  assert [t['status'] for t in trajs] == ['ok'] * len(trajs), [t['failure'] for t in trajs]

  # The searches the trajectories record went to the HTTP server, hits and all.
  recorded = [s['tool'] for t in trajs for s in t['steps'] if s['tool']]
  assert recorded and {c['query'] for c in recorded} == {QUERY}
  assert QUERY in server.queries
  assert all(c['results'] and c['results'][0]['link_text'] for c in recorded)

  # The LLM judge asked the model, and its verdict (True) won over the
  # matcher's (False for this answer) for every judged answer.
  judge_prompts = [p for p in seen if judge_prompt.VERDICT_CALL in p and 'REF_ANSWER: str' in p]
  assert len(judge_prompts) >= len(ids)
  summary = json.loads((exp / 'bamboogle' / 'eval' / 'summary.json').read_text())
  assert summary['judge']['name'] == 'llm_judge(policy)'
  assert summary['judge']['sources'] == {'llm': 2 * len(ids) * RUNS}
  for kind in ('final', 'answer_generation'):
    assert summary[kind] == {'mean': 100.0, 'std': 0.0, 'n_runs': RUNS}
  rows = [json.loads(line) for line in
          (exp / 'bamboogle' / 'eval' / 'results.jsonl').read_text().splitlines()]
  assert len(rows) == len(ids) * RUNS
  assert all(r['judge_source_final'] == 'llm' and r['final_answer'] == ANSWER for r in rows)
  assert (exp / 'config.gin').is_file()
  assert 'bamboogle' in capsys.readouterr().out

  # Run again: nothing is rolled out, searched or judged a second time.
  server.queries.clear()
  seen.clear()
  before = [p.read_bytes() for p in shards]
  assert _main(_argv(exp, setup['hf_dir'], server.url)) == 0
  assert [p.read_bytes() for p in shards] == before
  assert server.queries == [] and seen == []
  assert 'already judged' in capsys.readouterr().out

  # The search API goes away and more questions are asked: one error line
  # before any model is loaded, and nothing already written changes.
  summary_bytes = (exp / 'bamboogle' / 'eval' / 'summary.json').read_bytes()
  server.stop()
  capsys.readouterr()
  argv = _argv(exp, setup['hf_dir'], server.url, f'--gin.LIMIT={NUM_QUESTIONS + 1}',
               '--gin.bamboogle.use_search_cache=False')
  assert _main(argv) == 2
  lines = _error_lines(capsys)
  assert len(lines) == 1 and 'http search' in lines[0] and '127.0.0.1' in lines[0], lines
  assert KEY not in lines[0]
  assert seen == []
  assert [p.read_bytes() for p in shards] == before
  assert (exp / 'bamboogle' / 'eval' / 'summary.json').read_bytes() == summary_bytes


def test_missing_hf_dir_is_one_error_line(setup, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(KEY_ENV, KEY)
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parent.parent)
  exp = tmp_path / 'exp'
  assert _main(_argv(exp, None, 'http://127.0.0.1:9/search?q={query}')) == 2
  lines = _error_lines(capsys)
  assert len(lines) == 1 and 'HF_DIR' in lines[0], lines
  assert _main(_argv(exp, tmp_path / 'nowhere', 'http://127.0.0.1:9/s?q={query}')) == 2
  lines = _error_lines(capsys)
  assert len(lines) == 1 and 'nowhere' in lines[0] and 'HF_DIR' in lines[0], lines
  assert not exp.exists()
