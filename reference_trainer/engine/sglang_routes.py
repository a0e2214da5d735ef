"""SGLang's native HTTP protocol on kwaigym's engine server, so the SGLang client can be tested for real
against a local model (and any SGLang client can drive a local engine).

Routes and what they do here:

- ``POST /generate``: SGLang's request (``input_ids`` one prompt or a batch, ``sampling_params``,
  ``return_logprob``, ``logprob_start_len``, ``top_logprobs_num``, ``rid``, ``extra_key``) and answer
  (``text``, ``output_ids``, ``meta_info`` with ``finish_reason`` ``{"type": ...}``, ``prompt_tokens``,
  ``completion_tokens``, ``weight_version``, ``output_token_logprobs`` and, from ``logprob_start_len``,
  ``input_token_logprobs`` as ``[logprob, token_id, null]``). As in SGLang, output log-probs are at the
  sampling temperature (1 for greedy), input log-probs at temperature 1, the first prompt token's
  ``null``; ``max_new_tokens: 0`` is a pure prefill. ``extra_key`` is recorded (there is no prefix
  cache here to separate).
- ``/pause_generation`` (new generations wait), ``/continue_generation``, ``/flush_cache`` (nothing to
  flush), ``/update_weights_from_disk`` (safetensors of a Hugging Face directory copied into the model
  in place), ``/init_weights_update_group`` / ``/update_weights_from_distributed`` /
  ``/destroy_weights_update_group`` (Gloo only), ``/release_memory_occupation`` /
  ``/resume_memory_occupation`` (nothing is freed; generating while released is refused, and after
  ``weights`` are resumed generation is refused until weights are sent again: SGLang's contract, made
  loud), ``GET /get_model_info``, ``GET /health_generate``.

The server counts every route it serves (``EngineServer.hits``) and keeps the order of control calls
(``EngineServer.events``): tests read them to check routing and the sync protocol.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kwaigym.chat.fields import BOOL, INT, LIST, NUM, STR, Fields, check, kind_of
from reference_trainer.engine.base import SampleParams
from reference_trainer.engine.routes import JsonRoute, Refused

_STRINGS = (
    lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)),
    "a string or a list of strings",
)
_REQUEST_KEYS = {"input_ids", "sampling_params", "return_logprob", "logprob_start_len", "top_logprobs_num",
                 "return_text_in_logprobs", "rid", "extra_key", "stream"}  # fmt: skip
_SAMPLING_KEYS = (
    "min_p",
    "repetition_penalty",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "stop",
    "no_stop_trim",
    "skip_special_tokens",
)


class Generate(JsonRoute):
    async def post(self) -> None:
        await self.guarded(self.generate)

    async def generate(self) -> None:
        body = self.body()
        if unknown := sorted(set(body) - _REQUEST_KEYS):
            raise Refused(f"{unknown[0]}: unknown field; expected some of {', '.join(sorted(_REQUEST_KEYS))}")
        if body.get("stream"):
            raise Refused("stream: not supported by this server; send stream: false")
        prompts, flat = self.prompts(body.get("input_ids"))
        f = Fields(body, "")
        want_logprob = f.read("return_logprob", BOOL) or False
        start = f.read("logprob_start_len", INT)
        start = -1 if start is None else start
        tops = f.read("top_logprobs_num", INT) or 0
        if (key := body.get("extra_key")) is not None:
            self.server.extra_keys.append(key)
        limit, params, trim = self.params(body.get("sampling_params") or {}, tops)
        await self.server.ready_to_generate()
        self.server.inflight += 1
        try:
            futures = [asyncio.wrap_future(self.engine.submit(p, params)) for p in prompts] if limit else []
            samples = await asyncio.gather(*futures)
            scores = (
                await asyncio.to_thread(self.engine.score, prompts)
                if want_logprob and start >= 0
                else [None] * len(prompts)
            )
        finally:
            self.server.inflight -= 1
        rid = body.get("rid")
        outputs = [
            self.answer(prompt, samples[i] if limit else None, scores[i], want_logprob, start, trim, rid, i)
            for i, prompt in enumerate(prompts)
        ]
        self.finish_json(outputs[0] if flat else outputs)

    def answer(self, prompt, sample, score, want_logprob, start, trim, rid, i) -> dict[str, Any]:
        version = str(self.engine.weights_version if sample is None else sample.weights_version)
        ids = list(sample.token_ids) if sample else []
        if sample is None:
            reason = {"type": "length", "length": 0}
        elif sample.finish_reason == "length":
            reason = {"type": "length", "length": len(ids)}
        else:
            reason = {"type": "stop", "matched": ids[-1] if ids else None}
        text = sample.text if sample and trim else self.engine.tokenizer.decode(ids, skip_special_tokens=True)
        meta: dict[str, Any] = {
            "id": rid if isinstance(rid, str) else rid[i] if isinstance(rid, list) else f"gen-{id(self)}-{i}",
            "finish_reason": reason,
            "prompt_tokens": len(prompt),
            "completion_tokens": len(ids),
            "cached_tokens": 0,
            "weight_version": version,
        }
        if want_logprob:
            meta["output_token_logprobs"] = (
                [[lp, t, None] for lp, t in zip(sample.logprobs, ids, strict=True)] if sample else []
            )
            if sample and sample.top_logprobs:
                meta["output_top_logprobs"] = [[[v, t, None] for t, v in top] for top in sample.top_logprobs]
            if score is not None:
                values = [None, *score]
                meta["input_token_logprobs"] = [
                    [values[p], prompt[p], None] for p in range(start, len(prompt))
                ]
        return {"text": text, "output_ids": ids, "meta_info": meta}

    def prompts(self, value: Any) -> tuple[list[list[int]], bool]:
        """The prompts, and whether one flat list was sent; every id must be in the vocabulary."""
        if not isinstance(value, list) or not value:
            got = "no such field" if value is None else kind_of(value) if value != [] else "an empty list"
            raise Refused(f"input_ids: expected a non-empty list of token ids or of lists of them, got {got}")
        flat = not isinstance(value[0], list)
        prompts = [value] if flat else value
        vocab = self.engine.model.get_input_embeddings().num_embeddings
        for i, prompt in enumerate(prompts):
            where = "input_ids" if flat else f"input_ids[{i}]"
            if not check(prompt, LIST, where):
                raise Refused(f"{where}: expected a non-empty list of token ids, got an empty list")
            for j, token in enumerate(prompt):
                if not (INT[0](token) and 0 <= token < vocab):
                    shown = kind_of(token) if not INT[0](token) else token
                    raise Refused(f"{where}[{j}]: expected a token id in [0, {vocab}), got {shown}")
        return prompts, flat

    def params(self, raw: Any, top_logprobs: int) -> tuple[int, SampleParams, bool]:
        """(max_new_tokens, the sampling, whether to trim the stop string from ``text``)."""
        f = Fields(raw, "sampling_params")
        if unknown := sorted(set(f.obj) - set(_SAMPLING_KEYS)):
            raise Refused(
                f"sampling_params.{unknown[0]}: unknown field; expected one of {', '.join(_SAMPLING_KEYS)}"
            )
        stop = f.read("stop", _STRINGS) or []
        for key, kind, neutral in (
            ("top_k", INT, (-1, 0)),
            ("min_p", NUM, (0,)),
            ("repetition_penalty", NUM, (1,)),
        ):
            if (value := f.read(key, kind)) not in (None, *neutral):
                raise Refused(
                    f"sampling_params.{key}: only {neutral[0]} (off) is supported here, got {value}"
                )
        f.read("skip_special_tokens", BOOL)
        limit = f.read("max_new_tokens", INT)
        limit = self.engine.max_new_tokens if limit is None else min(limit, self.engine.max_new_tokens)
        if limit < 0:
            raise Refused(f"sampling_params.max_new_tokens: expected >= 0, got {limit}")
        temperature, top_p = f.read("temperature", NUM), f.read("top_p", NUM)
        params = SampleParams(
            temperature=self.engine.temperature if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            stop=[stop] if isinstance(stop, str) else stop,
            max_new_tokens=max(limit, 1),
            top_logprobs=top_logprobs,
        )
        return limit, params, not f.read("no_stop_trim", BOOL)

    def finish_json(self, value: Any) -> None:
        import json

        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))


class _Control(JsonRoute):
    """A POST that changes the server's state; recorded in ``server.events``."""

    async def post(self) -> None:
        self.server.events.append(self.request.path.strip("/"))
        await self.guarded(self.handle)

    async def handle(self) -> None:
        answer = await self.run(self.body() if self.request.body else {})
        if not self._finished:
            self.finish(answer or {"success": True, "message": ""})

    async def run(self, body: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError


class Pause(_Control):
    async def run(self, body):
        self.server.resumed.clear()


class Continue(_Control):
    async def run(self, body):
        self.server.resumed.set()


class FlushCache(_Control):
    """Answers in plain text, as SGLang's does (its clients must not expect JSON here)."""

    async def run(self, body):
        if self.server.inflight:
            raise Refused(f"cache not flushed: {self.server.inflight} requests are running", 400)
        self.set_header("Content-Type", "text/plain")
        self.finish("Cache flushed.\n")


class UpdateFromDisk(_Control):
    async def run(self, body):
        path = Fields(body, "").read("model_path", STR, required=True)
        if not (files := await asyncio.to_thread(lambda: sorted(Path(path).glob("*.safetensors")))):
            return self.refuse(f"model_path: {path!r} holds no *.safetensors files")
        from safetensors.torch import load_file

        state = await asyncio.to_thread(lambda: {k: v for file in files for k, v in load_file(file).items()})
        await asyncio.to_thread(self.engine.update_weights, state)
        self.server.stale_weights = False
        return {"success": True, "message": f"loaded {len(state)} tensors", "num_paused_requests": 0}

    def refuse(self, message: str) -> None:
        self.set_status(400)
        self.finish({"success": False, "message": message})


class InitGroup(_Control):
    async def run(self, body):
        from reference_trainer.engine.weight_group import WeightGroup

        f = Fields(body, "")
        name = body.get("group_name", "weight_update_group")
        if body.get("backend", "gloo") != "gloo":
            raise Refused(f"backend: this server has no GPU; use gloo, got {body.get('backend')!r}")
        address = f.read("master_address", STR, required=True)
        port, offset, world = (
            f.read(k, INT, required=True) for k in ("master_port", "rank_offset", "world_size")
        )
        group = await asyncio.to_thread(WeightGroup, address, port, offset, world, group_name=name)
        self.server.groups[name] = group


class UpdateFromDistributed(_Control):
    async def run(self, body):
        import torch

        name = body.get("group_name", "weight_update_group")
        if (group := self.server.groups.get(name)) is None:
            raise Refused(
                f"group_name: no weight update group {name!r}; call /init_weights_update_group first"
            )
        names, dtypes, shapes = body.get("names"), body.get("dtypes"), body.get("shapes")
        if not (isinstance(names, list) and isinstance(dtypes, list) and isinstance(shapes, list)):
            raise Refused("names, dtypes and shapes: expected three lists of the same length")

        def receive():
            state = {}
            for n, d, s in zip(names, dtypes, shapes, strict=True):
                tensor = torch.empty(s, dtype=getattr(torch, d.removeprefix("torch.")))
                group.broadcast(tensor, src=0)
                state[n] = tensor
            return self.engine.update_weights(state)

        await asyncio.to_thread(receive)
        self.server.stale_weights = False


class DestroyGroup(_Control):
    async def run(self, body):
        if (group := self.server.groups.pop(body.get("group_name", "weight_update_group"), None)) is not None:
            group.close()


class Release(_Control):
    async def run(self, body):
        if self.server.inflight:
            raise Refused(f"memory not released: {self.server.inflight} requests are running; pause first")
        self.server.released |= set(body.get("tags") or ("kv_cache", "weights"))


class Resume(_Control):
    async def run(self, body):
        tags = set(body.get("tags") or ("kv_cache", "weights"))
        if "weights" in tags & self.server.released:
            self.server.stale_weights = True  # SGLang's contract: resumed weights are garbage until re-synced
        self.server.released -= tags


class ModelInfo(JsonRoute):
    def get(self) -> None:
        name, version = self.engine.path or self.engine.name, str(self.engine.weights_version)
        self.finish(
            {"model_path": name, "tokenizer_path": name, "is_generation": True, "weight_version": version}
        )


class HealthGenerate(JsonRoute):
    async def get(self) -> None:
        await self.guarded(self.probe)

    async def probe(self) -> None:
        await self.server.ready_to_generate()
        await asyncio.wrap_future(self.engine.submit([self.engine.pad_id], SampleParams(max_new_tokens=1)))
        self.finish({"status": "ok"})


ROUTES = [
    (r"/generate", Generate),
    (r"/pause_generation", Pause),
    (r"/continue_generation", Continue),
    (r"/flush_cache", FlushCache),
    (r"/update_weights_from_disk", UpdateFromDisk),
    (r"/init_weights_update_group", InitGroup),
    (r"/update_weights_from_distributed", UpdateFromDistributed),
    (r"/destroy_weights_update_group", DestroyGroup),
    (r"/release_memory_occupation", Release),
    (r"/resume_memory_occupation", Resume),
    (r"/get_model_info", ModelInfo),
    (r"/health_generate", HealthGenerate),
]
