"""A multi-turn chat with a model through its chat template, each reply streamed as text while
its tokens are sampled.

Every turn renders the whole conversation (system message, turns so far, the new user turn)
and samples one reply with the engine's sampler; reply i is drawn from the random stream seeded
by (settings.seed, i), so the same conversation gets the same replies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.types import Message
from prefalign.engine.sampling.decode import sample_prompts
from prefalign.engine.sampling.settings import DecodeSettings
from prefalign.engine.sampling.tokens import pad_token_id, stop_token_ids

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase


class TextStream:
    """Turns token ids, one at a time, into the text they add. Text is held back while it ends
    in an incomplete UTF-8 character (a byte-level token may carry part of one), so every
    piece handed out is whole characters; special tokens give no text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self.text = ""  # the text handed out so far

    def push(self, token_id: int) -> str:
        """The new text after `token_id` (possibly empty)."""
        self.token_ids.append(token_id)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        # Decoding more tokens only appends text for byte-level BPE; were a tokenizer to rewrite
        # earlier text, the printed part stays as printed and only the tail is handed out.
        piece = text[len(self.text):]
        self.text = text
        return piece

    def finish(self) -> str:
        """The text still held back at the end (an incomplete character stays as U+FFFD)."""
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        piece, self.text = text[len(self.text):], text
        return piece


class ChatSession:
    """A conversation: an optional system message and the turns so far."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                 settings: DecodeSettings, system: str | None = None) -> None:
        if settings.num_samples != 1:
            raise ValueError("chat: decoding.num_samples must be 1")
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.system = system
        self.turns: list[Message] = []
        self.replies = 0  # replies sampled so far, the next reply's stream key

    def messages(self, user: str | None = None) -> list[Message]:
        """The conversation as messages, with `user` as a new last turn when given."""
        system = [Message("system", self.system)] if self.system else []
        return [*system, *self.turns, *([Message("user", user)] if user is not None else [])]

    def reset(self) -> None:
        """Forget the turns (the system message stays)."""
        self.turns = []

    def reply(self, user: str, on_text: Callable[[str], None] | None = None) -> str:
        """Sample the reply to `user`, calling `on_text` with each new piece of its text; the
        exchange joins the conversation once the reply is complete (not when interrupted)."""
        prompt = render_prompt(self.tokenizer, self.messages(user))
        stream = TextStream(self.tokenizer)

        def emit(prompt_index: int, sample: int, token_id: int) -> None:
            piece = stream.push(token_id)
            if piece and on_text is not None:
                on_text(piece)

        key = self.replies
        self.replies += 1
        for _ in sample_prompts(self.model, batch_token_ids(self.tokenizer, [prompt]),
                                self.settings, stop_token_ids(self.tokenizer),
                                pad_id=pad_token_id(self.tokenizer), keys=[key],
                                on_token=emit):
            pass
        rest = stream.finish()
        if rest and on_text is not None:
            on_text(rest)
        self.turns += [Message("user", user), Message("assistant", stream.text)]
        return stream.text
