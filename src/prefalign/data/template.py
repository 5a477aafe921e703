"""Render chat messages with the tokenizer's own chat template and check the prompt/response seam.

Rules every tokenised pair follows:

* The prompt is `render_prompt` (the template with `add_generation_prompt=True`): system turn
  (the template's default when the messages have none), every turn, then the open assistant
  header. The full sequence is `render_full`: the same messages plus the assistant response,
  `add_generation_prompt=False`.
* The prompt's token ids must be an exact prefix of the full sequence's ids. Anything else is a
  `TemplateMismatchError` showing where the two differ, never a silent slice. A common cause is a
  response starting with whitespace: byte-level BPE merges it with the header's trailing "\\n".
* Encoding is exact but avoids re-tokenising the shared prompt: see `encode_conversations`.
* The labelled response runs from the end of the prompt up to and including the template's
  end-of-turn token (`<|im_end|>` for ChatML/SmolLM2). What a template writes after it (ChatML's
  "\\n" between turns) is separator, not response, and is left out of the sequence entirely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prefalign.data.types import Message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Rendered as an assistant response to see what the template writes around a response.
_SENTINEL = "PREFALIGN-SENTINEL-RESPONSE"
_CONTEXT_TOKENS = 4  # tokens shown on each side of a mismatch

MessageLike = Message | Mapping[str, str]


class TemplateMismatchError(ValueError):
    """The rendered prompt's token ids are not a prefix of the prompt+response token ids."""

    def __init__(self, message: str, *, position: int, pair_id: str | None = None):
        super().__init__(message)
        self.position = position
        self.pair_id = pair_id


def _as_dicts(messages: Sequence[MessageLike]) -> list[dict[str, str]]:
    return [m.to_dict() if isinstance(m, Message) else dict(m) for m in messages]


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[MessageLike]) -> str:
    """The prompt text: the messages plus the open assistant header (add_generation_prompt=True)."""
    return tokenizer.apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=True
    )


def render_full(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[MessageLike], response: str
) -> str:
    """The messages followed by the assistant response, as one closed conversation."""
    conversation = [*_as_dicts(messages), {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)


def end_of_turn_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of the token that closes an assistant turn in this tokenizer's template.

    Found by rendering a sentinel response: the first token after it is the end-of-turn token
    when it is a special token (ChatML: `<|im_end|>`). Otherwise the eos token is used.
    """
    full = render_full(tokenizer, [{"role": "user", "content": "hi"}], _SENTINEL)
    after = full.split(_SENTINEL, 1)[1] if _SENTINEL in full else ""
    after_ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
    special_ids = set(tokenizer.all_special_ids) | _added_special_ids(tokenizer)
    if after_ids and after_ids[0] in special_ids:
        return int(after_ids[0])
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r}: cannot tell how its chat template ends an "
            f"assistant turn (no special token after the response, no eos token)"
        )
    return int(tokenizer.eos_token_id)


def _added_special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i) for i, token in decoder.items() if getattr(token, "special", False)}


def batch_token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as the model sees it: the template already wrote the specials."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)[
        "input_ids"
    ]


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], fulls: Sequence[Sequence[str]]
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Token ids of each prompt and of each full text (fulls[j][i] extends prompts[i]).

    The ids equal those of encoding every full text whole, but the shared prompt is encoded
    once. A fast tokenizer encodes the text between special tokens independently, so when a
    full text starts with its prompt, both split at the prompt's last special token (the
    assistant header's `<|im_start|>`): the full ids are the prompt's ids before that point
    plus the ids of the tail. The split is checked on the prompt itself (its tail, encoded
    alone, must equal the end of its ids); where it does not hold, the full text is encoded whole.
    """
    prompt_ids = batch_token_ids(tokenizer, prompts)
    specials = {int(i) for i in tokenizer.all_special_ids} | _added_special_ids(tokenizer)
    seams = [
        _seam(tokenizer, prompt, ids, specials)
        if all(side[i].startswith(prompt) for side in fulls)
        else None
        for i, (prompt, ids) in enumerate(zip(prompts, prompt_ids, strict=True))
    ]
    split = [i for i, seam in enumerate(seams) if seam is not None]
    tails = batch_token_ids(tokenizer, [prompts[i][seams[i] :] for i in split])
    heads: dict[int, int] = {}  # prompt index -> number of prompt ids before the seam
    for i, tail in zip(split, tails, strict=True):
        head = len(prompt_ids[i]) - len(tail)
        if head >= 0 and prompt_ids[i][head:] == tail:
            heads[i] = head
    whole = [i for i in range(len(prompts)) if i not in heads]
    full_ids = []
    for side in fulls:
        side_tails = batch_token_ids(tokenizer, [side[i][seams[i] :] for i in heads])
        side_whole = batch_token_ids(tokenizer, [side[i] for i in whole])
        ids: list[list[int]] = [[] for _ in prompts]
        for i, tail in zip(heads, side_tails, strict=True):
            ids[i] = prompt_ids[i][: heads[i]] + tail
        for i, encoded in zip(whole, side_whole, strict=True):
            ids[i] = encoded
        full_ids.append(ids)
    return prompt_ids, full_ids


def _seam(
    tokenizer: PreTrainedTokenizerBase, prompt: str, ids: Sequence[int], specials: set[int]
) -> int | None:
    """Character offset of the prompt's last special token, or None when it has none."""
    last = next((t for t in reversed(ids) if t in specials), None)
    if last is None:
        return None
    offset = prompt.rfind(tokenizer.convert_ids_to_tokens(last))
    return offset if offset >= 0 else None


def labelled_response_end(response_ids: Sequence[int], eot_id: int) -> int:
    """Length of the labelled response: up to and including its last end-of-turn token.

    Tokens after it (the template's turn separator) are dropped. Without an end-of-turn token
    (a template that writes none) the whole response is kept.
    """
    for index in range(len(response_ids) - 1, -1, -1):
        if response_ids[index] == eot_id:
            return index + 1
    return len(response_ids)


def check_prompt_prefix(
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    full_ids: Sequence[int],
    *,
    pair_id: str | None = None,
    response: str | None = None,
) -> None:
    """Raise TemplateMismatchError unless prompt_ids is an exact prefix of full_ids."""
    n = len(prompt_ids)
    if len(full_ids) >= n and list(full_ids[:n]) == list(prompt_ids):
        return
    position = next(
        (i for i, (a, b) in enumerate(zip(prompt_ids, full_ids, strict=False)) if a != b),
        min(n, len(full_ids)),
    )
    start = max(0, position - _CONTEXT_TOKENS)
    stop = position + _CONTEXT_TOKENS
    lines = [
        f"chat template of tokenizer {tokenizer.name_or_path!r}: the prompt's tokens are not a "
        f"prefix of the prompt+response tokens"
        + (f" (pair {pair_id})" if pair_id is not None else ""),
        f"first difference at token {position} (prompt has {n} tokens, "
        f"prompt+response has {len(full_ids)})",
        f"  prompt:          {_show(tokenizer, prompt_ids, start, position, stop)}",
        f"  prompt+response: {_show(tokenizer, full_ids, start, position, stop)}",
    ]
    if response is not None and response[:1].isspace():
        lines.append(
            "hint: the response starts with whitespace, which the tokenizer merges with the end "
            "of the prompt; strip leading whitespace from responses"
        )
    raise TemplateMismatchError("\n".join(lines), position=position, pair_id=pair_id)


def _show(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], start: int, split: int, stop: int
) -> str:
    """Decoded tokens around a position, '|' marking where the sequences part ways."""
    before = [repr(tokenizer.decode([i])) for i in ids[start:split]]
    after = [repr(tokenizer.decode([i])) for i in ids[split:stop]] or ["(end)"]
    lead = "... " if start > 0 else ""
    return lead + " ".join(before) + " | " + " ".join(after)
