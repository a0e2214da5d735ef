"""A small local rollout engine: a Hugging Face causal LM on this machine, as a kwaigym policy.

It is the engine for CPU runs and tests (SGLang serves real training,
:mod:`reference_trainer.engine.sglang`; both share :class:`~reference_trainer.engine.base.ChatEngine`).
Each request is rendered with the model's own chat template (tools included), sampled with
``generate``, and answered with the completion's token ids and log-probabilities, so trajectories
carry what a trainer needs. Tool calls are read in the Hermes format most open models are trained
on: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

One model serves every episode of a process. Calls that arrive within ``batch_window_s`` of
each other are sampled together, in one left-padded ``generate`` over the KV cache (a small
dynamic batcher on a worker thread); each row keeps its own temperature, top-p, token limit
and stop strings. Log-probabilities are always those of the policy's own distribution (raw
logits / temperature, temperature 1 for greedy rows): top-p only changes which token is drawn.

Weights: the trainer may own the model (``LocalEngine.from_model``) and step it in place, or
send new tensors with ``update_weights``; both bump ``weights_version``. Limits: rows share one
random stream (a request's ``seed`` is not honoured), and a row's stop strings are checked on
its decoded text after every token.

    kwaigym eval --policy local:/path/to/model --scaffold mini

(registered as the ``local`` policy under the entry point group ``kwaigym.policies``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import Any

from kwaigym.chat.types import ChatRequest, Completion
from kwaigym.errors import ConfigError
from kwaigym.policies import Policy
from reference_trainer.engine.base import ChatEngine, EngineResponder, Sample, SampleParams, parse_tool_calls
from reference_trainer.engine.batcher import Batcher

__all__ = ["LocalEngine", "LocalResponder", "Sample", "SampleParams", "make_policy", "parse_tool_calls"]


_DEFAULT_PARAMS = SampleParams()  # frozen, so one instance serves as the default


class _Rows:
    """Per-row sampling, as a logits processor and a stopping criterion of one ``generate`` call.

    The processor applies each row's temperature, top-p, or greedy choice to the step's scores (the
    raw logits, less any token the model's generation config forbids); the criterion stops rows at
    their own limit or stop string. Log-probabilities are computed afterwards from the raw logits.
    """

    def __init__(self, tokenizer, params: Sequence[SampleParams], prompt_width: int, device):
        import torch

        self.torch, self.tokenizer, self.params, self.width = torch, tokenizer, params, prompt_width
        temps = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
        self.greedy = temps == 0
        self.temps = torch.where(self.greedy, torch.ones_like(temps), temps)[:, None]
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)[:, None]

    def __call__(self, input_ids, scores):
        torch = self.torch
        scores = scores.float() / self.temps
        if (self.top_p < 1).any():
            sorted_scores, order = scores.sort(-1, descending=True)
            probs = sorted_scores.softmax(-1)
            drop = (probs.cumsum(-1) - probs) > self.top_p  # the mass before a token already suffices
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        if self.greedy.any():
            best = scores.argmax(-1, keepdim=True)
            onehot = torch.full_like(scores, float("-inf")).scatter(-1, best, 0.0)
            scores = torch.where(self.greedy[:, None], onehot, scores)
        return scores

    def done(self, input_ids, scores, **kwargs):
        steps = input_ids.shape[1] - self.width
        stopped = [steps >= p.max_new_tokens for p in self.params]
        for row, p in enumerate(self.params):
            if p.stop and not stopped[row]:
                text = self.tokenizer.decode(input_ids[row, self.width :], skip_special_tokens=True)
                stopped[row] = any(s in text for s in p.stop)
        return self.torch.tensor(stopped, device=input_ids.device)

    def logprobs(self, logits, drawn):
        """Per row and step: log p(drawn token) under log_softmax(raw logits / temperature); the top ones."""
        top_k = max(p.top_logprobs for p in self.params)
        chosen, tops = [], []
        for t, step in enumerate(logits):  # one step at a time: a (B, vocab) temporary, not (B, T, vocab)
            logp = self.torch.log_softmax(step.float() / self.temps, -1)
            chosen.append(logp.gather(-1, drawn[:, t : t + 1])[:, 0])
            if top_k:
                tops.append(logp.topk(top_k, -1))
        logp = self.torch.stack(chosen, 1).tolist() if chosen else [[] for _ in self.params]
        tops = [(v.tolist(), i.tolist()) for v, i in tops]
        return logp, [[(v[r], i[r]) for v, i in tops] for r in range(len(self.params))]


# ``generate``'s knobs that reshape the distribution, switched off: the draw follows the policy (a model's
# generation_config.json may say top_k=20, repetition_penalty=1.05). Its hard constraints stay
# (suppress_tokens, bad_words_ids, min_new_tokens...): they forbid tokens, never change reported log-probs.
_NEUTRAL: dict[str, Any] = dict(
    do_sample=True,
    num_beams=1,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=None,
    typical_p=1.0,
    top_h=None,
    epsilon_cutoff=0.0,
    eta_cutoff=0.0,
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    sequence_bias=None,
    guidance_scale=None,
    exponential_decay_length_penalty=None,
    renormalize_logits=False,
    watermarking_config=None,
    return_dict_in_generate=True,
    output_logits=True,
    output_scores=False,
)


class LocalEngine(ChatEngine):
    """A causal LM and its tokenizer: loaded once from ``path``, or shared with a trainer (``from_model``).

    Args:
        path: a Hugging Face model directory (or give ``model`` and ``tokenizer``, already loaded).
        name: the model's name in answers (default: the directory's name).
        max_new_tokens: the most tokens of any completion (a request's ``max_tokens`` is capped by it).
        temperature, top_p: the policy's sampling; with ``request_sampling`` a request's own values win.
        seed: seeds the engine's random stream (the global torch RNG is left as it was).
        batch_window_s: how long the first waiting call waits for others to join its batch.
        max_batch_size: the most prompts in one ``generate``.
        threads: torch's intra-op threads while sampling (None: leave torch's setting). On a small
            CPU machine the engine shares the cores with the sandboxes, and a tiny model's decode
            steps gain little from a second thread: the train demo samples with 1, and its
            rollouts ran about 15% faster on 2 cores. Training keeps torch's setting.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        model=None,
        tokenizer=None,
        name: str | None = None,
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        request_sampling: bool = False,
        batch_window_s: float = 0.005,
        max_batch_size: int = 8,
        threads: int | None = None,
    ):
        import torch

        if threads is not None and threads < 1:
            raise ConfigError(f"local engine: threads must be at least 1, got {threads}")

        if model is None or tokenizer is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if path is None or not Path(path, "config.json").is_file():
                raise ConfigError(f"local policy: {path} is not a model directory (no config.json)")
            model = AutoModelForCausalLM.from_pretrained(path).eval()
            tokenizer = AutoTokenizer.from_pretrained(path)
        self.model, self.tokenizer = model, tokenizer
        self.path = str(path) if path is not None else None
        """The model directory it was loaded from (None for a shared model)."""
        self.name = (
            name or (Path(path).name if path else getattr(model.config, "_name_or_path", "")) or "local"
        )
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.threads = threads
        self.request_sampling = request_sampling
        """Honour a request's temperature and top_p (an OpenAI server's habit); off, RL's choice."""
        self.generator = torch.Generator().manual_seed(seed)
        self.lock = threading.Lock()
        """Held while the model samples or its weights change."""
        self.weights_version = 0
        self.batcher = Batcher(self.sample, batch_window_s, max_batch_size)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.eos_ids = sorted(
            eos | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def from_model(cls, model, tokenizer, **options: Any) -> LocalEngine:
        """An engine on a model that is already loaded (the trainer's: its in-place steps are seen here)."""
        return cls(model=model, tokenizer=tokenizer, **options)

    # --- tokens in, tokens out -------------------------------------------------------------------

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        params: SampleParams | Sequence[SampleParams] = _DEFAULT_PARAMS,
    ) -> list[Sample]:
        """Sample all prompts in one left-padded ``generate`` (blocking); ``params``: shared or per prompt."""
        import torch

        rows = [params] * len(prompts) if isinstance(params, SampleParams) else list(params)
        if len(rows) != len(prompts):
            raise ConfigError(f"sample: {len(prompts)} prompts but {len(rows)} sampling params")
        if not prompts:
            return []
        if not all(prompts):
            raise ConfigError("sample: every prompt needs at least one token")
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :], mask[i, width - len(prompt) :] = torch.tensor(list(prompt)), 1
        recorder = _Rows(self.tokenizer, rows, width, device)
        with (
            self.lock,
            torch.no_grad(),
            _intra_op_threads(self.threads),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=self.generator)))
            version = self.weights_version
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                logits_processor=[recorder],
                stopping_criteria=[recorder.done],
                max_new_tokens=max(p.max_new_tokens for p in rows),
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids or None,
                **_NEUTRAL,
            )
        drawn = out.sequences[:, width:]
        logp, tops = recorder.logprobs(out.logits, drawn)
        drawn = drawn.tolist()
        return [
            self._finish(list(prompt), drawn[r], logp[r], tops[r], p, version)
            for r, (prompt, p) in enumerate(zip(prompts, rows, strict=True))
        ]

    def _finish(self, prompt, drawn, logp, tops, p: SampleParams, version: int) -> Sample:
        """One row of the batch, cut at its own end: limit, end-of-sequence token, or stop string."""
        cut, reason = min(p.max_new_tokens, len(drawn)), "length"
        end = next((i + 1 for i, t in enumerate(drawn[:cut]) if t in self.eos_ids), None)
        if end is not None:
            cut, reason = end, "stop"
        decode = self.tokenizer.decode
        text = decode(drawn[:cut], skip_special_tokens=True)
        if p.stop and any(s in text for s in p.stop):
            cut = next(
                k
                for k in range(1, cut + 1)
                if any(s in decode(drawn[:k], skip_special_tokens=True) for s in p.stop)
            )
            text, reason = decode(drawn[:cut], skip_special_tokens=True), "stop"
            text = text[: min(text.find(s) for s in p.stop if s in text)]
        return Sample(
            prompt_ids=tuple(prompt),
            token_ids=tuple(drawn[:cut]),
            logprobs=tuple(logp[:cut]),
            finish_reason=reason,
            text=text,
            weights_version=version,
            logprob_temperature=p.temperature or 1.0,
            top_logprobs=tuple(
                tuple(zip(ids[: p.top_logprobs], vals[: p.top_logprobs], strict=True))
                for vals, ids in tops[:cut]
            )
            if p.top_logprobs
            else (),
        )

    def submit(self, prompt: Sequence[int], params: SampleParams) -> Future:
        """Queue one prompt for the batcher: a future of its ``Sample``."""
        return self.batcher.submit(list(prompt), params)

    async def agenerate(
        self, prompt_ids: Sequence[int], params: SampleParams, *, session: str | None = None
    ) -> Sample:
        """One prompt through the batcher, awaited without holding a thread (one model: no routing)."""
        return await asyncio.wrap_future(self.submit(prompt_ids, params))

    def score(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """Per sequence, log p(token_t | tokens before t) at temperature 1 for t >= 1.

        Blocking; one forward per sequence, under the lock (between sampling batches)."""
        import torch

        from reference_trainer.rl import token_logprobs

        device = next(self.model.parameters()).device
        with self.lock, torch.no_grad():
            return [
                token_logprobs(self.model, torch.tensor([list(seq)], device=device), None)[0].tolist()
                for seq in sequences
            ]

    async def aprefill_logprobs(
        self, sequences: Sequence[Sequence[int]], *, passes: int = 1
    ) -> list[list[float]]:
        """``score`` off the event loop. ``passes`` is accepted and ignored: a local forward is deterministic,
        so every pass would be the same (MCLA needs a non-deterministic engine)."""
        if passes < 1:
            raise ConfigError(f"prefill_logprobs: passes must be >= 1, got {passes}")
        return await asyncio.to_thread(self.score, sequences)

    def complete(self, request: ChatRequest, *, session: str | None = None) -> Completion:
        """Sample one answer to ``request`` (blocking; batched with concurrent calls)."""
        return self.to_completion(self.submit(self.render(request), self.params_for(request)).result())

    async def sync_from(self, model, tokenizer=None) -> int:
        """The trainer stepped ``model``: the shared model's version moves on, another's tensors copied in."""
        return self.update_weights(None if model is self.model else model.state_dict())

    # --- weights ---------------------------------------------------------------------------------

    def update_weights(self, state_dict: Mapping[str, Any] | None = None) -> int:
        """Copy new tensors into the model in place, between batches; returns the new ``weights_version``.

        With no ``state_dict`` the weights were already changed in place (a trainer's optimizer step
        on the shared model, best taken under ``engine.lock``): only the version moves on.
        """
        import torch

        with self.lock, torch.no_grad():
            if state_dict is not None:
                own = self.model.state_dict()
                if unknown := sorted(set(state_dict) - set(own)):
                    raise ConfigError(f"update_weights: the model has no {', '.join(unknown[:5])}")
                if wrong := [n for n, t in state_dict.items() if tuple(t.shape) != tuple(own[n].shape)]:
                    raise ConfigError(
                        f"update_weights: {wrong[0]} has shape {tuple(state_dict[wrong[0]].shape)}, "
                        f"expected {tuple(own[wrong[0]].shape)}"
                    )
                for name, tensor in state_dict.items():
                    own[name].copy_(tensor)
            self.weights_version += 1
            return self.weights_version


@contextlib.contextmanager
def _intra_op_threads(count: int | None):
    """torch's intra-op thread count set to ``count`` for the block, then put back."""
    import torch

    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


LocalResponder = EngineResponder
"""The name existing callers use: answers every call with the engine, the episode as its session."""


@cache
def _engine(path: str) -> LocalEngine:
    return LocalEngine(path)


def make_policy(path: str):
    """The ``local:PATH`` policy factory (entry point ``local`` in ``kwaigym.policies``)."""
    if not path:
        raise ConfigError("policy local: needs a model directory, as local:/path/to/model")
    responder = LocalResponder(_engine(path))
    return lambda task, scaffold: Policy(responder)
