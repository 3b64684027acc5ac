"""The experiment report as a reader sees it: rendered by headless Chromium.

Builds a report from a constructed experiment directory (three generations by
three sizes of auto-eval summaries, two trajectories with hostile text), then
asks Chromium for a screenshot, its network log and the DOM after scripts ran:

* the screenshot shows the results table: a rectangle of the table's cell
  colour (`report.RESULTS_BG`) of plausible size near the top of the page,
  under a header band, cut into one horizontal band per generation;
* the page loads nothing from the network (inline CSS, relative images);
* model text such as `<script>` stays text: the title is unchanged.

Every check runs on a control page too (no results table, an unescaped script,
an external image) and must fail there. Without a Chromium binary the tests
skip, unless `RESTREACT_REQUIRE_BROWSER=1` (CI) makes that a failure.
"""

from __future__ import annotations

import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from restreact_jax.evaluation import report
from tests.test_rankers import cand, trajectory

_BINARIES = ('/usr/bin/chromium', 'chromium', 'chromium-browser', 'google-chrome')
_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
          '--hide-scrollbars', '--window-size=1280,2000')
_TITLE = 'restreact-jax report'
_HOSTILE_SCRIPT = "<script>document.title='PWNED'</script>"
_HOSTILE_IMG = '<img src=missing.png onerror="document.title=\'PWNED\'">'
_EXTERNAL = 'http://example.invalid/tracker.png'
# gen -> size -> (final mean, std); 'l' was not evaluated in gen 0 (an N/A cell).
_ACCURACY = {0: {'xs': (44.7, 2.1), 's': (56.6, 1.9)},
             1: {'xs': (54.4, 1.8), 's': (61.9, 2.0), 'l': (74.0, 1.2)},
             2: {'xs': (65.9, 1.5), 's': (69.7, 1.1), 'l': (76.1, 0.9)}}


def _find_chromium() -> str | None:
  for name in _BINARIES:
    path = shutil.which(name)
    if path:
      return path
  return None


@pytest.fixture(scope='module')
def chromium() -> str:
  path = _find_chromium()
  if path is None:
    message = ('no Chromium binary (looked for /usr/bin/chromium, chromium, chromium-browser, '
               "google-chrome); `make test` as root installs Debian's chromium")
    if os.environ.get('RESTREACT_REQUIRE_BROWSER') == '1':
      pytest.fail(message)
    pytest.skip(message)
  return path


def _write(path: pathlib.Path, obj: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


def _experiment(root: pathlib.Path) -> pathlib.Path:
  """An EXP_DIR with eval summaries for 3 generations and 2 hostile trajectories."""
  exp = root / 'exp'
  _write(exp / 'world' / 'world.json', {'seed': 5})
  _write(exp / 'manifest.json', {'version': 1, 'phases': {'x': {'seconds': 3725.0}}})
  for g, sizes in _ACCURACY.items():
    for size, (mean, std) in sizes.items():
      _write(exp / f'gen_{g}' / 'eval' / size / 'summary.json',
             {'final': {'mean': mean, 'std': std, 'n_runs': 10},
              'answer_generation': {'mean': mean - 2, 'std': std, 'n_runs': 10}})
  first = trajectory('q1')
  first['steps'][0]['tool']['results'][0]['snippet'] = f'Orchard {_HOSTILE_SCRIPT} facts'
  first['steps'][0]['candidates'].append(cand(None, text=_HOSTILE_IMG, ppl=7.5))
  second = trajectory('q2', repeat=1)
  second['question'] = f'Who wrote {_HOSTILE_SCRIPT}?'
  second['final_answer'] = _HOSTILE_IMG
  shard = exp / 'gen_2' / 'trajectories' / 'shard-00000.jsonl'
  shard.parent.mkdir(parents=True)
  shard.write_text(json.dumps(first) + '\n' + json.dumps(second) + '\n')
  _write(exp / 'gen_2' / 'ranked' / 'rankings.jsonl',
         {'question_id': 'q1', 'repeat': 0, 'step_index': 0, 'step_type': 'decision',
          'order': [1, 0], 'explanation': f'#2 is better {_HOSTILE_SCRIPT}', 'ranker': 'rules',
          'oracle': False, 'status': 'ok'})
  return exp


def _render(binary: str, page: pathlib.Path, out: pathlib.Path) -> dict[str, Any]:
  """Screenshot + network log in one Chromium run, the post-script DOM in another."""
  out.mkdir(parents=True, exist_ok=True)
  common = [binary, *_FLAGS, f'--user-data-dir={out / "profile"}']
  shot, netlog = out / 'page.png', out / 'net.json'
  for args in ([f'--screenshot={shot}', f'--log-net-log={netlog}'], ['--dump-dom']):
    proc = subprocess.run([*common, *args, page.resolve().as_uri()], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, 'HOME': str(out)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    if args == ['--dump-dom']:
      dom = proc.stdout
  assert shot.exists(), 'Chromium wrote no screenshot'
  return {'png': shot, 'netlog': json.loads(netlog.read_text()), 'dom': dom}


def _hex(colour: str) -> np.ndarray:
  return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def _mask(png: pathlib.Path, colour: str, tolerance: int = 2) -> np.ndarray:
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  rgb = np.rint(matplotlib.image.imread(png)[..., :3] * 255).astype(int)
  return np.all(np.abs(rgb - _hex(colour)) <= tolerance, axis=-1)


def _runs(line: np.ndarray, min_len: int) -> list[tuple[int, int]]:
  """(start, stop) of the True runs of at least `min_len` pixels."""
  edges = np.diff(np.concatenate([[0], line.astype(int), [0]]))
  return [(a, b) for a, b in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0])
          if b - a >= min_len]


def find_results_table(png: pathlib.Path) -> dict[str, Any] | None:
  """Finds the results table in a screenshot by its colours, or None.

  The table's body cells are `RESULTS_BG`, its header `RESULTS_HEAD_BG`, and its
  rows are `RESULTS_ROW_GAP_PX` apart. Text covers part of each cell, so the
  rows are counted along the most-covered pixel column (the cells' padding).

  Args:
    png: the screenshot.

  Returns:
    `{"box": (top, bottom, left, right), "bands": [(start, stop), ...],
    "header": (start, stop) | None}` or None when no plausible table is seen.
  """
  mask = _mask(png, report.RESULTS_BG)
  rows = np.nonzero(mask.sum(axis=1) >= 150)[0]  # a table row is wide
  if rows.size == 0:
    return None
  cols = np.nonzero(mask[rows].sum(axis=0) >= 20)[0]
  top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
  box = mask[top:bottom, left:right]
  if right - left < 250 or bottom - top < 30 or box.mean() < 0.6:
    return None
  column = box[:, int(np.argmax(box.sum(axis=0)))]
  bands = [(top + a, top + b) for a, b in _runs(column, min_len=15)]
  head = _mask(png, report.RESULTS_HEAD_BG)[:top, left + 2]
  head_runs = _runs(head, min_len=15)
  header = head_runs[-1] if head_runs and top - head_runs[-1][1] <= 10 else None
  return {'box': (top, bottom, left, right), 'bands': bands, 'header': header}


class _Loads(html.parser.HTMLParser):
  """Collects URL-bearing attributes, script elements, event handlers, the title."""

  def __init__(self):
    super().__init__()
    self.urls: list[str] = []
    self.scripts = 0
    self.handlers: list[str] = []
    self.title = ''
    self._in_title = False

  def handle_starttag(self, tag, attrs):
    self.scripts += tag == 'script'
    self.handlers += [k for k, _ in attrs if k.startswith('on')]
    self._in_title = tag == 'title'
    self.urls += [v for k, v in attrs if k in ('src', 'href', 'srcset', 'data', 'poster') and v]

  def handle_endtag(self, tag):
    self._in_title = False

  def handle_data(self, data):
    if self._in_title:
      self.title += data


def _parse(text: str) -> _Loads:
  parser = _Loads()
  parser.feed(text)
  return parser


def page_requests(netlog: dict[str, Any]) -> list[str]:
  """URLs the page itself asked the network for.

  Chromium's own background traffic runs under other network isolation keys;
  the page's requests carry the key of its `file://` site.

  Args:
    netlog: the parsed `--log-net-log` file.

  Returns:
    The requested URLs.
  """
  start = netlog['constants']['logEventTypes']['URL_REQUEST_START_JOB']
  return [e['params']['url'] for e in netlog['events']
          if e['type'] == start and 'file://' in e['params'].get('network_isolation_key', '')]


@pytest.fixture(scope='module')
def rendered(chromium, tmp_path_factory) -> dict[str, Any]:
  root = tmp_path_factory.mktemp('report_browser')
  exp = _experiment(root)
  index = report.build_report(exp)
  page = index.read_text()
  # The control: the same page without the results table, with one unescaped
  # script and one external image. Every check below must fail on it.
  control = re.sub(r'<table class="results">.*?</table>', '', page, count=1, flags=re.S)
  assert control != page
  control = control.replace('</body>', f'{_HOSTILE_SCRIPT}<img src="{_EXTERNAL}"></body>')
  control_path = index.parent / 'control.html'
  control_path.write_text(control)
  return {'index': index, 'html': page,
          'report': _render(chromium, index, root / 'shot_report'),
          'control': _render(chromium, control_path, root / 'shot_control')}


def test_screenshot_shows_the_results_table(rendered):
  table = find_results_table(rendered['report']['png'])
  assert table is not None, 'no results-table rectangle in the screenshot'
  top, bottom, left, right = table['box']
  # The table comes first on the page, below the title, and is a real table.
  assert 60 < top < 400, table
  assert 300 <= right - left <= 1100, table
  # One band per generation, equally tall, separated by the row gap.
  bands = table['bands']
  assert len(bands) == len(_ACCURACY), bands
  heights = [b - a for a, b in bands]
  assert max(heights) - min(heights) <= 2 and min(heights) >= 20, heights
  gaps = [bands[i + 1][0] - bands[i][1] for i in range(len(bands) - 1)]
  assert all(abs(g - report.RESULTS_ROW_GAP_PX) <= 1 for g in gaps), gaps
  assert table['header'] is not None, 'no header band directly above the table'


def test_table_check_fails_without_the_table(rendered):
  assert find_results_table(rendered['control']['png']) is None


def test_page_loads_nothing_from_the_network(rendered):
  assert page_requests(rendered['report']['netlog']) == []
  assert page_requests(rendered['control']['netlog']) == [_EXTERNAL]  # the check can see loads
  # Statically too: every link is relative and points at a file of the report.
  parsed = _parse(rendered['html'])
  assert parsed.urls, 'the page should link its plots'
  for url in parsed.urls:
    assert not re.match(r'^([a-z][a-z0-9+.-]*:|//)', url, re.I), url
    assert (rendered['index'].parent / url).is_file(), url
  assert not re.search(r'@import|url\(', rendered['html'])


def test_hostile_model_text_stays_text(rendered):
  dom = rendered['report']['dom']
  parsed = _parse(dom)
  assert parsed.title == _TITLE and parsed.scripts == 0
  assert 'PWNED' not in parsed.title
  # The text is shown, escaped, where the model wrote it.
  assert '&lt;script&gt;document.title=\'PWNED\'&lt;/script&gt;' in dom
  assert parsed.handlers == [] and 'onerror=' in dom  # present as text, not as an attribute
  control = _parse(rendered['control']['dom'])
  assert control.title == 'PWNED' and control.scripts == 1  # scripts do run in this check
