"""A small local rollout engine: a Hugging Face causal LM on this machine, as a kwaigym policy.

It is the engine for CPU runs and tests (SGLang serves real training). Each request is
rendered with the model's own chat template (tools included), sampled with ``generate``, and
answered with the completion's token ids and log-probabilities, so trajectories carry what a
trainer needs. Tool calls are read in the Hermes format most open models are trained on:
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. One model serves every episode of
a process; calls take turns on it (a lock), off the event loop (a thread).

    kwaigym eval --policy local:/path/to/model --scaffold mini

(registered as the ``local`` policy under the entry point group ``kwaigym.policies``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from functools import cache
from pathlib import Path

from kwaigym.chat.types import ChatRequest, Completion, TokenLogprob, ToolCall, Usage
from kwaigym.errors import ConfigError
from kwaigym.policies import Policy
from kwaigym.proxy.responders import CallContext
from kwaigym.trajectory.export import chat_messages, chat_tools

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Split Hermes-style tool calls out of generated text; malformed ones stay in the text."""
    calls = []
    for match in _TOOL_CALL.finditer(text):
        try:
            data = json.loads(match.group(1))
            name, arguments = data["name"], data.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            continue
        arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=str(name), arguments=arguments))
    if calls:
        text = _TOOL_CALL.sub("", text)
    return text.strip(), calls


class LocalEngine:
    """A causal LM and its tokenizer, loaded once from ``path``."""

    def __init__(
        self, path: str | Path, *, max_new_tokens: int = 512, temperature: float = 1.0, seed: int = 0
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(path, "config.json").is_file():
            raise ConfigError(f"local policy: {path} is not a model directory (no config.json)")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.lock = threading.Lock()

    def complete(self, request: ChatRequest) -> Completion:
        """Sample one answer to ``request`` (blocking)."""
        messages = [m for group in chat_messages(request.messages, request) for m in group]
        tools = chat_tools(request) or None
        prompt = self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                    tokenize=True, return_dict=False)  # fmt: skip
        prompt = list(prompt["input_ids"] if isinstance(prompt, dict) else prompt)
        limit = request.params.max_tokens or self.max_new_tokens
        with self.lock, self.torch.no_grad():
            self.torch.manual_seed(int(self.torch.randint(0, 2**31, (1,), generator=self.generator)))
            out = self.model.generate(
                self.torch.tensor([prompt]), max_new_tokens=min(limit, self.max_new_tokens), do_sample=True,
                temperature=self.temperature, output_logits=True, return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )  # fmt: skip
        ids = out.sequences[0, len(prompt) :].tolist()
        # The policy's own distribution (raw logits at the sampling temperature), not generate's processed
        # scores: suppressed tokens or top-k would make rollout and trainer log-probs disagree.
        logprobs = [
            TokenLogprob(token=self.tokenizer.decode([t]), token_id=t,
                         logprob=float(self.torch.log_softmax(logits[0].float() / self.temperature, -1)[t]))
            for t, logits in zip(ids, out.logits, strict=False)
        ]  # fmt: skip
        eos = self.tokenizer.eos_token_id
        finished = bool(ids) and ids[-1] == eos
        text, calls = parse_tool_calls(self.tokenizer.decode(ids, skip_special_tokens=True))
        return Completion(
            text=text, tool_calls=calls, finish_reason="stop" if finished or calls else "length",
            usage=Usage(input_tokens=len(prompt), output_tokens=len(ids)),
            prompt_token_ids=prompt, token_ids=ids, logprobs=logprobs,
        )  # fmt: skip


class LocalResponder:
    """Answers every call with the local engine (in a thread, so the proxy keeps serving)."""

    def __init__(self, engine: LocalEngine):
        self.engine = engine

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        return await asyncio.to_thread(self.engine.complete, request)


@cache
def _engine(path: str) -> LocalEngine:
    return LocalEngine(path)


def make_policy(path: str):
    """The ``local:PATH`` policy factory (entry point ``local`` in ``kwaigym.policies``)."""
    if not path:
        raise ConfigError("policy local: needs a model directory, as local:/path/to/model")
    responder = LocalResponder(_engine(path))
    return lambda task, scaffold: Policy(responder)
