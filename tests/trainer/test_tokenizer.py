"""The byte-level tokenizer and preset model directories: exact round trips, a chat template whose
renders are prefixes of each other, Hermes tool calls the engine parses back, and an ASCII-only
random model whose every sampled turn survives the trainer's re-tokenisation check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.engine.local import parse_tool_calls  # noqa: E402
from reference_trainer.tokenizer import SPECIAL_TOKENS, build_model_dir, byte_tokenizer  # noqa: E402

TOKENIZER = byte_tokenizer()


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_any_text_round_trips_one_token_per_byte(text):
    ids = TOKENIZER.encode(text, add_special_tokens=False)
    assert TOKENIZER.decode(ids) == text
    if not any(s in text for s in SPECIAL_TOKENS):
        assert len(ids) == len(text.encode())


def test_chat_renders_are_prefixes_and_tool_calls_parse_back():
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    call = {"type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}}
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "fix it"},
             {"role": "assistant", "content": "Looking.", "tool_calls": [call]},
             {"role": "tool", "content": "calc.py"}, {"role": "assistant", "content": "done"}]  # fmt: skip
    renders = [TOKENIZER.apply_chat_template(turns[:n], tools=tools, tokenize=False) for n in range(1, 6)]
    assert all(b.startswith(a) for a, b in zip(renders, renders[1:], strict=False))
    assert renders[0].startswith("<|tools|>[") and "<|tool|>\ncalc.py<|end|>" in renders[-1]
    assistant = renders[2][len(renders[1]) :]
    text, calls = parse_tool_calls(assistant.removeprefix("<|assistant|>\n").removesuffix("<|end|>\n"))
    assert text == "Looking." and calls[0].name == "bash" and calls[0].arguments == '{"command": "ls"}'


@pytest.mark.parametrize("preset", ["tiny-dense", "tiny-moe"])
def test_preset_directory_loads_and_samples_printable_text(tmp_path, preset):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_model_dir(tmp_path, preset, seed=3)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == len(tokenizer) == len(TOKENIZER)
    assert tokenizer.chat_template == TOKENIZER.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)  # fmt: skip
    out = model.generate(**prompt, do_sample=True, max_new_tokens=64, min_new_tokens=64)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    text = tokenizer.decode(new)
    assert tokenizer.encode(text, add_special_tokens=False) == new  # the trainer's round-trip check
    assert all(ch.isprintable() or ch in "\n\t" for ch in tokenizer.decode(new, skip_special_tokens=True))


def test_tool_tags_survive_decoding_and_turns_end_at_end(tmp_path):
    """The engine decodes without special tokens: the tool-call tags must stay (one token each) so a
    call parses back; sampling stops at <|end|>, where the template ends an assistant turn."""
    tokenizer = byte_tokenizer()
    text = '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>'
    ids = tokenizer.encode(text + "<|end|>", add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<tool_call>") and len(ids) == len(text) - 23 + 3
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == text and parse_tool_calls(decoded)[1][0].name == "bash"
    from transformers import GenerationConfig

    build_model_dir(tmp_path / "m")
    eos = GenerationConfig.from_pretrained(tmp_path / "m").eos_token_id
    assert sorted(eos) == sorted(tokenizer.convert_tokens_to_ids(["<|end|>", "<|eos|>"]))
