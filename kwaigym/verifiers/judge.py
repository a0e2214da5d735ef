"""The ``judge`` verifier: a model scores the attempt against a rubric (LLM-as-judge).

A rubric is a list of weighted dimensions, each on an anchored 0-5 scale (the anchors say what
a 0, a 3 and a 5 look like, so scores mean the same across attempts and judges). The judge gets
one request holding the task's instruction, the rubric, the agent's final message and, when
``files`` are named, those files as the agent left them (each cut at ``max_file_chars``). It must
answer a JSON object ``{"scores": {dimension: 0-5}, "rationale": "..."}``; code fences and prose
around it are tolerated. The reward is the weighted mean of the scores divided by 5.

The judge is a ``Responder`` passed as ``judge=`` (``UpstreamResponder`` for a real model,
``ScriptedResponder`` in tests), the same interface that answers agents' calls. An answer that
is not such an object, or misses a dimension, or scores one outside 0-5, makes the result invalid:
a judge that cannot follow the format cannot be trusted to have read the rubric either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from kwaigym.chat.types import ChatRequest, Message, SamplingParams, TextPart
from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import CallContext, Responder, new_call_id
from kwaigym.sandbox.base import Sandbox
from kwaigym.task import Task, VerifierSpec
from kwaigym.verifiers.base import Attempt, VerifierResult, need_sandbox, parse_params, read_text, tail

SCALE = 5


def _anchors(value) -> dict[int, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"anchors must map scores 0-{SCALE} to descriptions, got {value!r}")
    out = {}
    for key, text in value.items():
        score = int(key) if str(key).isdigit() else -1
        if not 0 <= score <= SCALE or not isinstance(text, str):
            raise ConfigError(f"anchor {key!r}: keys are scores 0-{SCALE}, values their descriptions")
        out[score] = text
    return dict(sorted(out.items()))


@attrs.frozen(kw_only=True)
class Dimension:
    """One scored aspect of a rubric."""

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    """Key of the score in the judge's answer and in ``scores``."""
    description: str = ""
    """What the dimension is about."""
    weight: float = attrs.field(default=1.0, converter=float)
    """Relative weight in the reward (positive)."""
    anchors: Mapping[int, str] = attrs.field(factory=dict, converter=_anchors)
    """What some scores of the 0-5 scale look like (keys may be given as strings, as TOML needs)."""

    def __attrs_post_init__(self):
        if not self.weight > 0:
            raise ConfigError(f"dimension {self.name!r}: weight must be positive, got {self.weight}")


def _rubric(value) -> tuple[Dimension, ...]:
    if isinstance(value, str | Mapping) or not value:
        raise ConfigError(
            "rubric must be a non-empty list of dimensions {name, weight, description, anchors}"
        )
    dims = tuple(d if isinstance(d, Dimension) else _dimension(d) for d in value)
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise ConfigError(f"rubric dimension names must be unique, got {names}")
    return dims


def _dimension(data) -> Dimension:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a rubric dimension must be a table/object, got {data!r}")
    unknown = set(data) - {"name", "description", "weight", "anchors"}
    if unknown:
        raise ConfigError(f"rubric dimension: unknown field(s) {', '.join(sorted(unknown))}")
    return Dimension(**data)


def _paths(value) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"files must be a list of paths, got {value!r}")
    return tuple(value)


_int = attrs.validators.instance_of(int)


@attrs.frozen(kw_only=True)
class JudgeParams:
    """Params of the ``judge`` verifier."""

    rubric: tuple[Dimension, ...] = attrs.field(converter=_rubric)
    """The weighted dimensions (see :data:`LANDING_PAGE_RUBRIC` for an example)."""
    files: tuple[str, ...] = attrs.field(default=(), converter=_paths)
    """Sandbox files shown to the judge (relative to the workdir or absolute)."""
    max_file_chars: int = attrs.field(default=20_000, validator=[_int, attrs.validators.gt(0)])
    """Each file is cut to this many characters (head kept)."""
    model: str = attrs.field(default="judge", validator=attrs.validators.instance_of(str))
    """Model name put in the request (an ``UpstreamResponder`` may override it)."""
    temperature: float = attrs.field(default=0.0, converter=float)
    max_tokens: int = attrs.field(default=2048, validator=[_int, attrs.validators.gt(0)])


SYSTEM_PROMPT = f"""You are a strict, fair grader of work done by a coding agent.
Score the work on each rubric dimension with a number from 0 to {SCALE}, using the anchors to
calibrate (a score between two anchors means the work lies between their descriptions).
Judge only what is shown; missing work scores low. Answer with one JSON object and nothing else:
{{"scores": {{"<dimension name>": <0-{SCALE}>, ...}}, "rationale": "<a few sentences>"}}"""


def build_request(
    instruction: str,
    rubric: Sequence[Dimension],
    final_message: str,
    files: Sequence[tuple[str, str]] = (),
    *,
    model: str = "judge",
    temperature: float = 0.0,
    max_tokens: int = 2048,
) -> ChatRequest:
    """The judge's request: instruction, rubric with anchors, the agent's final message and files."""
    parts = [f"## Task given to the agent\n\n{instruction.strip()}", "## Rubric"]
    for dim in rubric:
        anchors = "\n".join(f"  - {score}: {text}" for score, text in dim.anchors.items())
        parts.append(
            f"- {dim.name} (weight {dim.weight:g}): {dim.description}" + (f"\n{anchors}" if anchors else "")
        )
    parts.append(f"## The agent's final message\n\n{final_message.strip() or '(none)'}")
    for path, text in files:
        parts.append(f"## File {path}\n\n```\n{text}\n```")
    names = ", ".join(json.dumps(d.name) for d in rubric)
    parts.append(f"Score every dimension ({names}) from 0 to {SCALE}, and answer with the JSON object only.")
    return ChatRequest(
        format="openai-chat",
        model=model,
        messages=[
            Message(role="system", content=[TextPart(text=SYSTEM_PROMPT)]),
            Message(role="user", content=[TextPart(text="\n\n".join(parts))]),
        ],
        params=SamplingParams(temperature=temperature, max_tokens=max_tokens),
    )


class JudgeAnswerError(ValueError):
    """The judge's answer is not the JSON object the rubric asks for."""


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_answer(text: str, rubric: Sequence[Dimension]) -> tuple[dict[str, float], str]:
    """(scores by dimension, rationale) from the judge's answer; raise JudgeAnswerError if unusable."""
    data = _json_object(text)
    scores = data.get("scores")
    if not isinstance(scores, Mapping):
        raise JudgeAnswerError(f'the answer has no "scores" object: {text[:300]!r}')
    out = {}
    for dim in rubric:
        value = scores.get(dim.name)
        if value is None:
            raise JudgeAnswerError(f"the answer does not score the dimension {dim.name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= SCALE:
            raise JudgeAnswerError(
                f"the score of {dim.name!r} must be a number from 0 to {SCALE}, got {value!r}"
            )
        out[dim.name] = float(value)
    rationale = data.get("rationale")
    return out, rationale if isinstance(rationale, str) else ""


def _json_object(text: str) -> dict[str, Any]:
    candidates = [text.strip(), *_FENCE.findall(text)]
    if "{" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    raise JudgeAnswerError(f"the answer is not a JSON object: {text[:300]!r}")


def weighted_reward(scores: Mapping[str, float], rubric: Sequence[Dimension]) -> float:
    """The weighted mean of the scores, divided by the top of the scale (so in [0, 1])."""
    total = sum(d.weight for d in rubric)
    return sum(d.weight * scores[d.name] for d in rubric) / (SCALE * total)


class JudgeVerifier:
    """Asks a judge model to score the attempt against a rubric (see the module docstring)."""

    kind = "judge"

    def __init__(self, spec: VerifierSpec, judge: Responder | None = None):
        if judge is None:
            raise ConfigError(
                "the judge verifier needs a judge model: pass judge=<Responder> (an UpstreamResponder "
                "for a real model) to verify / get_verifier"
            )
        self.judge = judge
        self.params: JudgeParams = parse_params(JudgeParams, spec)

    async def verify(self, sandbox: Sandbox | None, task: Task, attempt: Attempt) -> VerifierResult:
        p = self.params
        files = [(path, await _file_for_judge(sandbox, path, p.max_file_chars)) for path in p.files]
        request = build_request(
            task.instruction, p.rubric, attempt.final_message, files,
            model=p.model, temperature=p.temperature, max_tokens=p.max_tokens,
        )  # fmt: skip
        episode = sandbox.spec.episode_id if sandbox is not None else f"judge-{task.id}"
        ctx = CallContext(episode_id=episode, call_id=new_call_id(), kind="auxiliary")
        completion = await self.judge.respond(request, ctx)
        details = {"judge_answer": tail(completion.text, 4000)}
        try:
            scores, rationale = parse_answer(completion.text, p.rubric)
        except JudgeAnswerError as exc:
            return VerifierResult.invalid(f"unusable judge answer: {exc}", **details)
        reward = weighted_reward(scores, p.rubric)
        return VerifierResult(
            reward=reward, reward_valid=True, scores=scores, details=details | {"rationale": rationale}
        )


async def _file_for_judge(sandbox: Sandbox | None, path: str, limit: int) -> str:
    try:
        text = await read_text(need_sandbox(sandbox, "judge"), path)
    except IsADirectoryError:
        return "(a directory, not a file)"
    if text is None:
        return "(this file does not exist)"
    if len(text) > limit:
        return f"{text[:limit]}\n[... {len(text) - limit} more characters cut ...]"
    return text


def _anchored(name: str, weight: float, description: str, zero: str, three: str, five: str) -> dict[str, Any]:
    return {
        "name": name,
        "weight": weight,
        "description": description,
        "anchors": {"0": zero, "3": three, "5": five},
    }


LANDING_PAGE_RUBRIC: list[dict[str, Any]] = [
    _anchored(
        "visual_design", 0.25, "Typography, colour, spacing and visual hierarchy of the page.",
        "Unstyled or broken: default browser styles, clashing colours, unreadable text.",
        "Consistent and tidy but generic; some spacing or contrast problems.",
        "Polished and coherent: clear hierarchy, harmonious palette, deliberate spacing.",
    ),
    _anchored(
        "layout_responsiveness", 0.2, "Structure of the page and how it adapts to screen sizes.",
        "Overlapping or broken layout; unusable on a phone.",
        "Sensible sections; works on desktop, mobile layout has flaws.",
        "Clean grid/flex layout that adapts well from phone to wide screens (media queries or fluid units).",
    ),
    _anchored(
        "content_completeness", 0.25, "The sections the instruction asked for (hero, features, "
        "pricing, testimonials, call to action, footer...) with meaningful copy.",
        "Most requested sections missing, or placeholder text only.",
        "Most sections present; some thin or generic copy.",
        "Every requested section present with specific, coherent copy and working links.",
    ),
    _anchored(
        "interactivity", 0.15, "Working interactive elements: navigation, buttons, forms, menus.",
        "Nothing interactive, or interactive elements that are broken.",
        "Basic links and buttons work; little feedback or validation.",
        "Smooth, accessible interactions (menu toggle, form validation, hover and focus states).",
    ),
    _anchored(
        "code_quality", 0.15, "Semantic, valid and maintainable HTML/CSS/JS.",
        "Invalid markup, inline styles everywhere, copy-pasted blocks, console errors.",
        "Mostly semantic and organised; some duplication or dead code.",
        "Semantic elements, accessible attributes, organised CSS, no dead code.",
    ),
]  # fmt: skip
"""An example rubric for "build a landing page" tasks: weights sum to 1, anchors at 0, 3 and 5."""
