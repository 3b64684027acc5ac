"""restreact-jax: ReST meets ReAct, JAX-native and T5X-style."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list[str]:
  lines = (_HERE / name).read_text().splitlines()
  return [l.split('#')[0].strip() for l in lines if l.split('#')[0].strip()]


setuptools.setup(
    name='restreact-jax',
    version='0.1.0',
    description=(
        'ReST meets ReAct: a self-improving multi-step search agent in JAX, '
        'T5X-style (gin, seqio, pjit, orbax).'
    ),
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=['restreact_jax*', 'tasks*']),
    package_data={
        'restreact_jax': [
            'agent/exemplars/**/*',
            'evaluation/exemplars/*',
            'datasets/data/**/*',
        ],
    },
    include_package_data=True,
    install_requires=_requirements('requirements.txt'),
    extras_require={'test': _requirements('requirements-test.txt')},
    entry_points={'console_scripts': ['restreact=restreact_jax.main:main']},
)
