"""TFDS builders for the shipped Bamboogle and BamTwoogle copies.

Both build offline from the package's own files:
`tfds.builder('bamboogle', data_dir=D).download_and_prepare(download_config=
tfds.download.DownloadConfig(try_download_gcs=False))`, or `build(name, D)`.
Each has a single 'test' split with features `id`, `question`, `answer` and
`answers` (the answer and its aliases).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from restreact_jax.datasets import benchmarks

_CITATIONS = {
    'bamboogle': """@article{press2022measuring,
  title={Measuring and Narrowing the Compositionality Gap in Language Models},
  author={Press, Ofir and Zhang, Muru and Min, Sewon and Schmidt, Ludwig and Smith, Noah A. and Lewis, Mike},
  journal={arXiv preprint arXiv:2210.03350}, year={2022}}""",
    'bamtwoogle': """@article{aksitov2023rest,
  title={ReST meets ReAct: Self-Improvement for Multi-Step Reasoning LLM Agent},
  author={Aksitov, Renat and Miryoosefi, Sobhan and Li, Zonglin and Li, Daliang and Babayan, Sheila and Kopparapu, Kavya and Fisher, Zachary and Guo, Ruiqi and Prakash, Sushant and Srinivasan, Pranesh and Zaheer, Manzil and Yu, Felix and Kumar, Sanjiv},
  journal={arXiv preprint arXiv:2312.10003}, year={2023}}""",
}


class _QABuilder(tfds.core.GeneratorBasedBuilder):
  """Shared body: question/answer rows from a shipped JSON-lines file."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Copy shipped with restreact-jax.'}
  _DATASET = ''

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'question': tfds.features.Text(),
            'answer': tfds.features.Text(),
            'answers': tfds.features.Sequence(tfds.features.Text()),
        }),
        supervised_keys=('question', 'answer'),
        citation=_CITATIONS[self._DATASET],
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the data ships with the package
    return {'test': self._generate_examples()}

  def _generate_examples(self):
    for row in benchmarks.load(self._DATASET):
      yield row['id'], {'id': row['id'], 'question': row['question'],
                        'answer': row['answer'], 'answers': list(row['answers'])}


class Bamboogle(_QABuilder):
  """Bamboogle: 125 two-hop questions (Press et al. 2023)."""
  _DATASET = 'bamboogle'


class Bamtwoogle(_QABuilder):
  """BamTwoogle: 100 multi-hop questions (Aksitov et al. 2023), CC BY 4.0."""
  _DATASET = 'bamtwoogle'


BUILDERS = {'bamboogle': Bamboogle, 'bamtwoogle': Bamtwoogle}


def build(name: str, data_dir: str | os.PathLike[str]) -> tfds.core.DatasetBuilder:
  """Prepares a builder offline and returns it.

  Args:
    name: 'bamboogle' or 'bamtwoogle'.
    data_dir: TFDS data directory.

  Returns:
    The prepared builder; `builder.as_dataset(split='test')` reads it.
  """
  builder = BUILDERS[name](data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
