"""`prefalign chat`: replies stream piece by piece and add up to the reply, the conversation
carries over turns, and the command driven in a real terminal (pexpect) answers as the
session does, with /system, /reset and /quit."""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path

import pytest
import torch

import prefalign
from prefalign.engine.sampling import DecodeSettings
from prefalign.engine.sampling.chat import ChatSession, TextStream
from tiny_models import tiny_llama

GREEDY = DecodeSettings(max_new_tokens=12, batch_size=1)
_PLAIN = set(string.ascii_letters + string.digits + " .,!?")


def plain_text_llama(tokenizer):
    """A tiny Llama whose greedy replies are plain text: the output rows of every token that
    decodes to anything but letters, digits, spaces and .,!? are zeroed, so their logits (0)
    lose to the best of the others, which is positive."""
    model = tiny_llama(tokenizer, initializer_range=0.2, tie_word_embeddings=False)
    with torch.no_grad():
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if not text or not set(text) <= _PLAIN:
                model.lm_head.weight[token_id] = 0
    return model


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return plain_text_llama(tiny_tokenizer)


@pytest.fixture(scope="module")
def model_dir(model, tiny_tokenizer, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("chat") / "tiny-chat"
    model.save_pretrained(str(directory), safe_serialization=True)
    tiny_tokenizer.save_pretrained(str(directory))
    return directory


def test_reply_streams_in_pieces_that_add_up(model, tiny_tokenizer) -> None:
    session = ChatSession(model, tiny_tokenizer, GREEDY)
    pieces: list[str] = []
    reply = session.reply("Hello!", on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == reply and reply.strip()
    assert [m.role for m in session.messages()] == ["user", "assistant"]


def test_turns_carry_over_and_reset_forgets_them(model, tiny_tokenizer) -> None:
    session = ChatSession(model, tiny_tokenizer, GREEDY, system="Be brief.")
    first = session.reply("Hello!")
    second = session.reply("Hello!")  # the same words, but after a turn: another context
    assert first != second
    session.reset()
    assert session.messages() == session.messages()[:1]  # only the system message
    assert session.reply("Hello!") == first


def test_text_stream_holds_back_split_characters(tiny_tokenizer) -> None:
    """'é' is two bytes; byte-level tokens for each byte alone decode to U+FFFD until both
    are there, so the first gives no text and the second gives the whole character."""
    ids = tiny_tokenizer("é", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2
    stream = TextStream(tiny_tokenizer)
    assert [stream.push(ids[0]), stream.push(ids[1])] == ["", "é"]


def test_in_a_terminal(model, model_dir, tiny_tokenizer) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": str(Path(prefalign.__file__).parents[1]),
           "TERM": "dumb", "TRANSFORMERS_VERBOSITY": "error"}
    child = pexpect.spawn(sys.executable, ["-m", "prefalign.cli.main", "chat", str(model_dir),
                                           "--greedy", "--max-new-tokens", "12"],
                          env=env, encoding="utf-8", timeout=180)
    session = ChatSession(model, tiny_tokenizer, GREEDY)
    try:
        child.expect_exact("you> ")
        assert say(child, "Hello!") == session.reply("Hello!")
        command(child, "/system Be brief.", "[system message: Be brief.]")
        session.system = "Be brief."
        assert say(child, "Why?") == session.reply("Why?")
        command(child, "/reset", "[conversation cleared]")
        session.reset()
        assert say(child, "Hello!") == session.reply("Hello!")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def say(child, line: str) -> str:
    """Send a user line; return the reply printed after 'model> ', up to the next prompt."""
    child.sendline(line)
    child.expect_exact("model> ")
    child.expect_exact("\r\nyou> ")
    return child.before


def command(child, line: str, answer: str) -> None:
    child.sendline(line)
    child.expect_exact(answer)
    child.expect_exact("you> ")
