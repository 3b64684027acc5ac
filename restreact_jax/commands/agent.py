"""`restreact agent`: run the agent on one question and print every step.

  restreact agent --gin_file=gin/runs/rollout.gin --gin.EXP_DIR="'runs/demo'" \
      --gin.MODEL=... --question "Who founded the company that produced The Glass Orchard?"

For each step it prints the step type, every candidate (perplexity, parse
outcome, the chosen one marked `*`), the search and its hits, and at the end
the drafted and the final answer; with the calculator on
(`--tools=search,calculator`) each calculation and its result.
`--show_prompts=true` also prints each step's state (the prompt without its
preamble). Takes the same settings as
`restreact rollout` (gin/runs/rollout.gin binds both).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any, Callable, Sequence

import gin

from restreact_jax import errors
from restreact_jax.agent import prompts
from restreact_jax.agent.agent import Agent, Finished, LLMCall
from restreact_jax.agent.trajectory import Step, Trajectory
from restreact_jax.commands import rollout as rollout_cmd


def _short(text: str, width: int = 160) -> str:
  flat = ' '.join(text.split())
  return flat if len(flat) <= width else flat[:width - 3] + '...'


def format_step(index: int, step: Step, show_prompt: bool = False) -> str:
  """A person-readable account of one step."""
  lines = [f'== step {index + 1}: {step.step_type} '
           f'({len(step.candidates)} candidates, attempt {step.attempts})']
  if show_prompt:
    lines.append(textwrap.indent(step.prompt[step.prefix_len:].rstrip('\n'), '   | '))
  for event in step.parse_events[:-1] if step.chosen is None else step.parse_events:
    errs = ', '.join(map(str, event['errors']))
    lines.append(f'   attempt {event["attempt"] + 1} failed: {errs}')
  for i, c in enumerate(step.candidates):
    mark = '*' if i == step.chosen else ' '
    status = 'ok' if c.parse['ok'] else c.parse['error']
    lines.append(f'  {mark} #{i} ppl={c.perplexity:8.3f} {status:<18} {_short(c.text)}')
  if step.chosen is not None:
    lines.append(f'   -> {json.dumps(step.action, ensure_ascii=False)}')
  if step.tool is not None and step.tool.name == 'calculator':
    lines.append(f'   calculate {step.tool.query!r} = {step.tool.result}')
  elif step.tool is not None:
    lines.append(f'   search {step.tool.query!r}:')
    if not step.tool.results:
      lines.append('     (no results)')
    for r in step.tool.results:
      lines.append(f'     [link_id={r.link_id}] {r.link_text}: {_short(r.snippet, 140)}')
  return '\n'.join(lines)


def format_ending(traj: Trajectory) -> str:
  if traj.status != 'ok':
    return f'== failed: {traj.failure}'
  calcs = f', calculations: {traj.num_calculations}' if traj.num_calculations else ''
  return (f'== searches: {traj.num_searches}{calcs}\n'
          f'== answer (drafted): {traj.answer_generation}\n'
          f'== final answer: {traj.final_answer}')


def run_verbose(agent: Agent, llm: Any, tool: Any, emit: Callable[[str], None] = print,
                show_prompts: bool = False) -> Trajectory:
  """Drives one agent, emitting each step as soon as it is decided."""
  request = agent.next(None)
  shown = 0
  while True:
    steps = agent.trajectory.steps
    # A step is shown once its search (if any) is done.
    while shown < len(steps) and not (
        steps[shown].action and steps[shown].action.get('type') == 'Search'
        and steps[shown].tool is None):
      emit(format_step(shown, steps[shown], show_prompts))
      shown += 1
    if isinstance(request, Finished):
      emit(format_ending(request.trajectory))
      return request.trajectory
    if isinstance(request, LLMCall):
      request = agent.next(llm.generate([request.request])[0])
    else:
      request = agent.next(tool.search([request.query], request.k)[0])


@gin.configurable
def agent(exp_dir: str = gin.REQUIRED,
          question: str = '',
          llm_backend: str = 'jax',
          model: Any = None,
          policy_checkpoint: str | None = None,
          hf_dir: str | None = None,
          vocab_path: str | None = 'vocab/spm.model',
          max_len: int | None = None,
          mesh_shape: Sequence[int] | None = None,
          openai_base_url: str = '',
          openai_model: str = '',
          api_key_env: str = 'OPENAI_API_KEY',
          exemplar_set: str | None = None,
          num_exemplars: int | str | None = 0,
          num_samples: int | str = 4,
          temperature: float | str = 0.5,
          max_tokens: int | str = 256,
          max_searches: int | str = 10,
          results_per_search: int | str = 3,
          max_attempts: int | str = 3,
          seed: int | str = 0,
          tools: Sequence[str] | str = prompts.DEFAULT_TOOLS,
          action_head: bool | str = False,
          constrain: bool | str = False,
          name_masking: bool | str = False,
          search_backend: str = 'bm25',
          search_http_config: Any = None,
          use_search_cache: bool = False,
          show_prompts: bool | str = False) -> Trajectory:
  """Runs one question and prints the trajectory step by step.

  Args: as `restreact rollout`, plus
    question: the question (`--question "..."`).
    show_prompts: also print each step's state.

  Returns:
    The trajectory.
  """
  if not str(question).strip():
    raise errors.UserError('agent needs --question "..."')
  from restreact_jax.commands import search as search_cmd  # pylint: disable=g-import-not-at-top
  config = rollout_cmd.make_agent_config(
      num_samples=num_samples, temperature=temperature, max_tokens=max_tokens,
      max_searches=max_searches, results_per_search=results_per_search,
      max_attempts=max_attempts, seed=seed,
      policy=policy_checkpoint or hf_dir or openai_model or llm_backend, tools=tools,
      action_head=action_head, constrain=constrain)
  prompter = prompts.Prompter(exemplar_set or None,
                              None if num_exemplars in (None, '', 'None') else int(num_exemplars))
  tool = search_cmd.make_search_tool(exp_dir, search_backend, search_http_config,
                                     rollout_cmd.as_bool(use_search_cache))
  llm = rollout_cmd.make_llm(
      exp_dir, backend=llm_backend, model=model, policy_checkpoint=policy_checkpoint,
      hf_dir=hf_dir, vocab_path=vocab_path, num_slots=int(num_samples), max_len=max_len,
      mesh_shape=mesh_shape, openai_base_url=openai_base_url, openai_model=openai_model,
      api_key_env=api_key_env)
  from restreact_jax.agent import name_masking as masking_lib  # pylint: disable=g-import-not-at-top
  masking = masking_lib.as_mode(name_masking, 'name_masking')
  if masking:
    llm = masking_lib.MaskedLLM(llm, masking_lib.from_world(exp_dir, mode=masking))
  print(f'question: {question}')
  the_agent = Agent(str(question), prompter=prompter, config=config, question_id='cli')
  return run_verbose(the_agent, llm, tool, show_prompts=rollout_cmd.as_bool(show_prompts))
