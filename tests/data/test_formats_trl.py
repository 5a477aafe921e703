"""TRL preference records: standard strings, conversational lists, implicit prompts, defects."""

from __future__ import annotations

from pathlib import Path

from prefalign.data.formats import trl
from prefalign.data.load import validate
from prefalign.data.types import Message, Provenance

FILES = Path(__file__).parent / "files"
BASE = Provenance("mem", 0)


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_standard_form_prompt_becomes_one_user_message_and_extras_become_metadata():
    result = validate(FILES / "trl_standard.jsonl")
    assert result.defects == []
    first = result.pairs[0]
    assert first.prompt == (Message("user", "Name a primary colour."),)
    assert (first.chosen, first.rejected) == ("Red.", "Green is the only colour.")
    assert first.provenance.metadata == (("score", "0.5"), ("source", "hand-made"))


def test_conversational_form_with_system_message():
    result = validate(FILES / "trl_conversational.jsonl")
    assert result.defects == []
    pair = result.pairs[0]
    assert pair.prompt == (Message("system", "Be brief."), Message("user", "Capital of Italy?"))
    assert pair.chosen == "Rome."


def test_implicit_prompt_is_the_shared_prefix():
    pair = validate(FILES / "trl_conversational.jsonl").pairs[1]
    assert [m.role for m in pair.prompt] == ["user", "assistant", "user"]
    assert pair.prompt[-1].content == "Tell me a joke."
    assert pair.rejected == "No."


def test_prompt_repeated_inside_chosen_is_stripped():
    prompt = [_msg("user", "q")]
    record = {"prompt": prompt, "chosen": [*prompt, _msg("assistant", "a")], "rejected": "b"}
    (pair,), defects = trl.parse(record, BASE)
    assert defects == [] and (pair.chosen, pair.rejected) == ("a", "b")


def test_implicit_prompt_must_end_with_a_user_message():
    # The lists share [user, assistant]; the cap keeps one message each as the reply, so the
    # prompt would be [user, assistant] followed by two replies: neither is allowed.
    chosen = [_msg("user", "q"), _msg("assistant", "a"), _msg("assistant", "x")]
    rejected = [_msg("user", "q"), _msg("assistant", "a"), _msg("assistant", "y")]
    _, defects = trl.parse({"chosen": chosen, "rejected": rejected}, BASE)
    assert [str(d) for d in defects] == [
        "mem:0: chosen: the prompt must end with a user message, got assistant"
    ]


def test_string_chosen_without_prompt_needs_a_prompt():
    _, defects = trl.parse({"chosen": "a", "rejected": "b"}, BASE)
    assert [d.field for d in defects] == ["prompt"]
    assert defects[0].message.startswith("missing field")


def test_defects_in_a_broken_file():
    path = FILES / "trl_broken.jsonl"
    assert [str(d) for d in validate(path).defects] == [
        f"{path}:1: prompt[1].role: must be one of system, user, assistant; got 'robot'",
        f"{path}:1: prompt[1].content: expected a string, got integer",
        f"{path}:1: rejected[0].content: empty or whitespace-only content",
        f"{path}:2: chosen[0].role: expected assistant, got user",
        f"{path}:2: rejected: expected exactly one assistant message, got 2",
        f"{path}:3: chosen: chosen and rejected share no leading messages, so there is no prompt",
        f"{path}:4: rejected: missing field",
        f"{path}:5: prompt: the prompt must end with a user message, got assistant",
    ]


def test_system_message_only_first_and_null_fields():
    record = {"prompt": [_msg("user", "q"), _msg("system", "s"), _msg("user", "q2")],
              "chosen": None, "rejected": "  "}
    _, defects = trl.parse(record, BASE)
    assert [str(d) for d in defects] == [
        "mem:0: chosen: is null",
        "mem:0: prompt[1].role: a system message may only come first",
        "mem:0: rejected: empty or whitespace-only response",
    ]


def test_record_id_and_looks_like():
    (pair,), _ = trl.parse({"uid": 12, "prompt": "q", "chosen": "a", "rejected": "b"}, BASE)
    assert pair.provenance.record_id == "12" and pair.provenance.pair_id == "12"
    assert trl.looks_like({"prompt": "q"})
    assert trl.looks_like({"chosen": [], "rejected": []})
    assert not trl.looks_like({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "x"})
    assert not trl.looks_like({"prompt": "q", "response_0": "a"})  # a PKU row


def test_malformed_messages():
    record = {"prompt": [{"content": "q"}, "hi", {"role": "user"}], "chosen": "a", "rejected": "b"}
    _, defects = trl.parse(record, BASE)
    assert [str(d) for d in defects] == [
        "mem:0: prompt[0].role: missing field",
        "mem:0: prompt[1]: expected a message object, got string",
        "mem:0: prompt[2].content: missing field",
    ]
