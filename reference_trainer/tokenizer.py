"""A byte-level tokenizer that needs no download, and model directories built from presets.

The tiny presets (:mod:`reference_trainer.model`) need a tokenizer to run real episodes, and
nothing may be fetched. :func:`byte_tokenizer` is a Hugging Face ``PreTrainedTokenizerFast``: one
token per byte (every text round-trips exactly), a handful of special tokens, and a chat template
in the format most open models are trained on:

- tools first, as JSON after ``<|tools|>``, so every render of a conversation is a prefix of the
  next (what turn-level training samples need);
- one block per message, ``<|role|>\\n ... <|end|>\\n``;
- assistant tool calls in the Hermes format, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
  (what :func:`reference_trainer.engine.local.parse_tool_calls` reads back);
- tool results as ``tool`` messages.

:func:`build_model_dir` writes a preset's random weights with this tokenizer to a directory that
``from_pretrained``, the local engine and the ``local:PATH`` policy load like any real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|end|>", "<|eos|>")
"""``<|end|>`` closes a message (and pads; sampling stops at it: it ends the assistant's turn),
``<|eos|>`` ends a completion."""
TOOL_TAGS = ("<tool_call>", "</tool_call>")
"""One token each, but not special: decoding keeps them, so the engine can read tool calls back."""

CHAT_TEMPLATE = (
    "{% if tools %}<|tools|>{{ tools | tojson }}<|end|>\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>\n"
    "{% if m.content is string %}{{ m.content }}{% elif m.content %}{% for p in m.content %}{{ p.text }}"
    "{% endfor %}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>"
    "{% endfor %}{% endif %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens, :data:`SPECIAL_TOKENS`, then :data:`TOOL_TAGS` (vocabulary 260), with
    :data:`CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # A BPE with the 256-symbol byte alphabet and no merges: exactly one token per byte.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.add_tokens(list(TOOL_TAGS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def unprintable_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Byte tokens that are not printable ASCII (or newline, tab): bytes >= 0x80 and controls.

    A random model samples bytes at random, and most byte strings are not valid UTF-8: they decode
    to replacement characters, do not re-tokenise to the same ids, and the trainer rightly masks
    such turns. Suppressing these ids in sampling keeps a tiny model's output trainable.
    """
    keep = {ord("\n"), ord("\t")} | set(range(0x20, 0x7F))
    return [i for i in range(256) if tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)])
            not in {chr(b) for b in keep}]  # fmt: skip


def build_model_dir(
    path: str | Path, preset: str = "tiny-dense", *, seed: int = 0, ascii_only: bool = True
) -> Path:
    """Write preset ``preset`` (random weights under ``seed``) and :func:`byte_tokenizer` to ``path``.

    The vocabulary is the tokenizer's; the end-of-sequence and padding ids are set in the config, and
    sampling stops at ``<|end|>`` (the end of the assistant's turn) or ``<|eos|>``. ``ascii_only``
    writes :func:`unprintable_ids` into the generation config's ``suppress_tokens`` (see there why).
    Returns ``path``.
    """
    from reference_trainer.model import load_model

    path = Path(path)
    tokenizer = byte_tokenizer()
    model = load_model(preset, vocab_size=len(tokenizer), seed=seed)
    model.config.eos_token_id = tokenizer.eos_token_id
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    if ascii_only:
        model.generation_config.suppress_tokens = unprintable_ids(tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
