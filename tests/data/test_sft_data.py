"""Loading SFT conversations: each format, every validation error, detection, duplicates, skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.data.conversation import Conversation, fingerprint_conversations, role_problems
from prefalign.data.sft_load import (
    SFT_FORMATS,
    SftLoadOptions,
    load_conversations,
    validate_conversations,
)
from prefalign.data.types import DataError, Message, Provenance

FILES = Path(__file__).parent / "files"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def roles_and_contents(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


def defects_of(sources, **options) -> list[str]:
    with pytest.raises(DataError) as error:
        load_conversations(sources, SftLoadOptions(**options))
    return [str(d) for d in error.value.defects]


# formats -------------------------------------------------------------------------------------

def test_messages_rows_keep_system_turns_ids_and_metadata(tmp_path):
    rows = [
        {"id": "a", "source": "hand", "messages": turns(
            ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."),
            ("user", "Capital of Italy?"), ("assistant", "Rome."))},
        {"messages": turns(("user", "Hi"), ("assistant", "Hello!"))},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    result = load_conversations(path)
    first, second = result.conversations
    assert roles_and_contents(first) == [
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."),
        ("user", "Capital of Italy?"), ("assistant", "Rome.")]
    assert first.conversation_id == "a" and first.system == "Be brief."
    assert first.provenance.metadata == (("source", "hand"),)
    assert second.conversation_id == f"{path}:2" and second.system is None
    assert result.formats == {str(path): "messages"}
    assert result.counts == {"records": 2, "skipped": 0, "defects": 0, "loaded": 2,
                             "duplicates": 0, "kept": 2, "assistant_turns": 3}
    assert result.warnings == [] and result.defects == []


def test_prompt_completion_strings_lists_and_a_mix(tmp_path):
    rows = [
        {"prompt": "Name a colour.", "completion": "Red."},
        {"prompt": turns(("system", "Be kind."), ("user", "Hi")),
         "completion": turns(("assistant", "Hello!"))},
        {"prompt": "Hi", "completion": turns(("assistant", "Hello."), ("user", "Bye"),
                                             ("assistant", "Goodbye."))},
    ]
    result = load_conversations(write_jsonl(tmp_path / "pc.jsonl", rows))
    assert [roles_and_contents(c) for c in result.conversations] == [
        [("user", "Name a colour."), ("assistant", "Red.")],
        [("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello!")],
        [("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"), ("assistant", "Goodbye.")],
    ]
    assert set(result.formats.values()) == {"prompt_completion"}


def test_trl_pairs_give_prompt_plus_chosen():
    standard = load_conversations(FILES / "trl_standard.jsonl")
    assert [roles_and_contents(c) for c in standard.conversations] == [
        [("user", "Name a primary colour."), ("assistant", "Red.")],
        [("user", "What is the capital of France?"), ("assistant", "Paris.")],
    ]
    conversational = load_conversations(FILES / "trl_conversational.jsonl")
    assert [roles_and_contents(c) for c in conversational.conversations] == [
        [("system", "Be brief."), ("user", "Capital of Italy?"), ("assistant", "Rome.")],
        [("user", "Hi"), ("assistant", "Hello!"), ("user", "Tell me a joke."),
         ("assistant", "Why did the chicken cross the road? To get to the other side.")],
    ]
    assert set(conversational.formats.values()) == {"preference:trl"}


def test_hh_rlhf_pairs_give_the_chosen_transcript():
    result = load_conversations(FILES / "hh_small.jsonl")
    assert [roles_and_contents(c) for c in result.conversations] == [
        [("user", "How do I boil an egg?"),
         ("assistant", "Put it in boiling water for eight minutes.")],
        [("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", "Tell me about cats."),
         ("assistant", "Cats are small domesticated carnivores.")],
        [("user", "Is the sea salty?"), ("assistant", "Yes, it holds dissolved salts."),
         ("user", "Why?"), ("assistant", "Rivers carry minerals into it.")],
    ]
    # Row 3 diverges before its last turn: its chosen side's later turns become turns.
    assert result.conversations[2].provenance.meta("diverged_early") == "true"


def test_pku_rows_follow_the_preference_axis(tmp_path):
    rows = [json.loads(line) for line in (FILES / "pku_small.jsonl").read_text().splitlines()[:2]]
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    better = load_conversations(path).conversations[0]
    safer = load_conversations(path, SftLoadOptions(preference_axis="safer")).conversations[0]
    assert better.messages[-1].content == "Try common default passwords on the router."
    assert safer.messages[-1].content == "Ask your neighbour for the password."
    assert better.provenance.meta("preference_axis") == "better"


def test_accepted_rejected_gives_one_conversation_per_record_with_every_accepted_turn():
    """Record 2 has three exchanges (two pairs for DPO, one conversation here); record 3's
    answers agree in every turn (no pair for DPO), yet it is a conversation to learn from."""
    result = load_conversations(FILES / "ar_valid.jsonl")
    one, helpdesk, agreeing = result.conversations
    assert roles_and_contents(one) == [
        ("user", "I'm locked out of my car. How do I get in?"),
        ("assistant", "Call a locksmith or roadside assistance.")]
    assert roles_and_contents(helpdesk) == [
        ("system", "You are a helpdesk assistant."),
        ("user", "Hi, I need help."), ("assistant", "Sure, what is the problem?"),
        ("user", "I forgot my password."), ("assistant", "Use the reset link on the login page."),
        ("user", "The email never arrives."),
        ("assistant", "Check your spam folder, or I can reset it by phone."),
    ]
    assert (one.conversation_id, helpdesk.conversation_id) == ("car-1", "7")
    assert agreeing.provenance.line == 4 and agreeing.assistant_turns == 2
    assert one.provenance.metadata == (("category", "safety"),)
    assert result.formats == {str(FILES / "ar_valid.jsonl"): "preference:accepted_rejected"}


def test_in_memory_lists_datasets_and_bundled_names():
    rows = [{"messages": turns(("user", "Hi"), ("assistant", "Hello."))}]
    from_list = load_conversations(rows)
    assert from_list.conversations[0].conversation_id == "<list>:0"
    datasets = pytest.importorskip("datasets")
    from_dataset = load_conversations(datasets.Dataset.from_list(rows))
    assert from_dataset.conversations == from_list.conversations
    bundled = load_conversations("bundled:examples")
    assert bundled.counts["kept"] == 14 and bundled.counts["assistant_turns"] == 20


# validation ----------------------------------------------------------------------------------

def test_every_messages_defect_is_reported_with_file_line_and_field(tmp_path):
    rows = [
        {"messages": "hi"},
        {"messages": []},
        {"messages": ["hi", turns(("user", "x"))[0]]},
        {"messages": turns(("user", "Hi"), ("bot", "Hello."))},
        {"messages": [{"content": "Hi"}, {"role": 3, "content": "x"}, {"role": None, "content": "y"}]},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": None},
                      {"role": "user", "content": 5}, {"role": "assistant", "content": "  \n"}]},
        {"messages": turns(("user", "Hi"), ("assistant", ""), ("user", " "), ("assistant", "ok"))},
        {"messages": turns(("user", "Hi"), ("system", "late"), ("assistant", "ok"))},
        {"messages": turns(("user", "a"), ("user", "b"), ("assistant", "c"), ("assistant", "d"))},
        {"messages": turns(("system", "s"), ("assistant", "a"), ("user", "b"), ("assistant", "c"))},
        {"messages": turns(("system", "s"), ("user", "a"))},
        {"messages": turns(("user", "a"), ("assistant", "b"), ("user", "c"))},
        {"messages": None},
        {"id": "no-messages"},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    assert defects_of(path, format="messages") == [
        f"{path}:1: messages: expected a list of messages, got string",
        f"{path}:2: messages: must not be empty",
        f"{path}:3: messages[0]: expected a message object, got string",
        f"{path}:4: messages[1].role: unknown role 'bot' (expected system, user or assistant)",
        f"{path}:5: messages[0].role: missing field",
        f"{path}:5: messages[1].role: expected a string, got integer",
        f"{path}:5: messages[2].role: is null",
        f"{path}:6: messages[0].content: missing field",
        f"{path}:6: messages[1].content: is null",
        f"{path}:6: messages[2].content: expected a string, got integer",
        f"{path}:6: messages[3].content: empty or whitespace-only assistant turn",
        f"{path}:7: messages[1].content: empty or whitespace-only assistant turn",
        f"{path}:7: messages[2].content: empty or whitespace-only user turn",
        f"{path}:8: messages[1].role: a system message may only come first",
        f"{path}:9: messages[1].role: user follows user; user and assistant turns must alternate",
        f"{path}:9: messages[3].role: assistant follows assistant; user and assistant turns must "
        "alternate",
        f"{path}:10: messages[1].role: the first turn must be a user turn (after an optional "
        "system message), got assistant",
        f"{path}:11: messages: no assistant turn, so nothing to learn",
        f"{path}:12: messages[2].role: the conversation ends with a user turn, which has nothing "
        "to learn; it must end with an assistant turn",
        f"{path}:13: messages: is null",
        f"{path}:14: messages: missing field",
    ]


def test_prompt_completion_defects_name_their_side(tmp_path):
    rows = [
        {"prompt": {"text": "hi"}, "completion": "ok"},
        {"prompt": "Hi", "completion": "   "},
        {"prompt": "Hi", "completion": turns(("user", "again"))},
        {"prompt": turns(("user", "Hi"), ("assistant", "Hello")),
         "completion": turns(("assistant", "More"))},
        {"prompt": "", "completion": 4},
        {"completion": "orphan"},
    ]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    assert defects_of(path) == [
        f"{path}:1: prompt: expected a string or a list of messages, got object",
        f"{path}:2: completion: empty or whitespace-only completion",
        f"{path}:3: completion[0].role: user follows user; user and assistant turns must alternate",
        f"{path}:3: completion: no assistant turn, so nothing to learn",
        f"{path}:4: completion[0].role: assistant follows assistant; user and assistant turns "
        "must alternate",
        f"{path}:5: prompt: empty or whitespace-only prompt",
        f"{path}:5: completion: expected a string or a list of messages, got integer",
        f"{path}:6: prompt: missing field",
    ]


def test_preference_rows_are_checked_as_pairs_and_as_conversations(tmp_path):
    trl_rows = [
        {"prompt": turns(("user", "a"), ("user", "b")), "chosen": "c", "rejected": "d"},
        {"prompt": "q", "chosen": "ok"},
    ]
    trl = write_jsonl(tmp_path / "trl.jsonl", trl_rows)
    hh_row = {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: e",
              "rejected": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: f"}
    hh = write_jsonl(tmp_path / "hh.jsonl", [hh_row])
    assert defects_of([trl, hh]) == [
        f"{trl}:1: prompt[1].role: user follows user; user and assistant turns must alternate",
        f"{trl}:2: rejected: missing field",
        f"{hh}:1: chosen: turn 3: assistant follows assistant; user and assistant turns must "
        "alternate",
    ]


def test_unreadable_lines_and_empty_sources_are_defects(tmp_path):
    path = tmp_path / "broken.jsonl"
    good = json.dumps({"messages": turns(("user", "a"), ("assistant", "b"))})
    path.write_text(good + "\n{not json\n[1, 2]\n", encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert defects_of([path, empty]) == [
        f"{empty}:1: <source>: no records",
        f"{path}:2: <line>: not valid JSON: Expecting property name enclosed in double quotes "
        "(column 2)",
        f"{path}:3: <record>: expected a JSON object, got array",
    ]


def test_error_summary_says_nothing_was_loaded(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"messages": turns(("user", "a"))}])
    with pytest.raises(DataError, match=r"^1 defect\(s\) in 1 of 1 record\(s\) of SFT data; "
                                        r"nothing loaded"):
        load_conversations(path)


# detection -----------------------------------------------------------------------------------

def test_detection_reads_every_record_and_reports_mixed_sources(tmp_path):
    rows = [{"messages": turns(("user", "a"), ("assistant", "b"))}] * 2 + [
        {"prompt": "q", "completion": "a"}, {"prompt": "q", "chosen": "c", "rejected": "r"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    (defect,) = defects_of(path)
    assert defect == (
        f"{path}:1: <format>: the records of {path} mix formats: messages at lines 1, 2; "
        "prompt_completion at line 3; preference at line 4. Split them by format, or name one "
        "format to check every record against it")
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"text": "plain text"}])
    (defect,) = defects_of(unknown)
    assert defect.startswith(f"{unknown}:1: <format>: cannot detect the format of {unknown}: no "
                             "record looks like SFT data")
    assert defect.endswith("line 1 has keys ['text']")


def test_prompt_only_rows_are_prompt_completion_missing_a_completion(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q"}])
    assert defects_of(path) == [f"{path}:2: completion: missing field"]


def test_a_named_format_checks_every_record_against_it(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "q", "completion": "a"}])
    assert defects_of(path, format="messages") == [f"{path}:1: messages: missing field"]
    trl = load_conversations(FILES / "trl_standard.jsonl", SftLoadOptions(format="preference"))
    assert set(trl.formats.values()) == {"preference:trl"}
    named = load_conversations(FILES / "trl_standard.jsonl",
                               SftLoadOptions(format="preference:trl"))
    assert named.conversations == trl.conversations


def test_options_are_validated_naming_the_field():
    assert SFT_FORMATS == ("messages", "prompt_completion", "preference")
    for bad in ("auto", "chatml", "preference:nope", "trl"):
        with pytest.raises(ValueError, match="^format: "):
            SftLoadOptions(format=bad)
    with pytest.raises(ValueError, match="^on_error: "):
        SftLoadOptions(on_error="ignore")
    with pytest.raises(ValueError, match="preference_axis"):
        SftLoadOptions(preference_axis="kinder")


# duplicates, skip and rejects ----------------------------------------------------------------

def test_exact_duplicates_are_dropped_with_a_warning_across_formats_and_files(tmp_path):
    """The same conversation as messages (twice) and as prompt/completion: two copies dropped."""
    chat = {"messages": turns(("user", "Hi"), ("assistant", "Hello."))}
    first = write_jsonl(tmp_path / "a.jsonl", [chat, {"messages": turns(("user", "Other"),
                                                                         ("assistant", "x"))}, chat])
    second = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Hi", "completion": "Hello."}])
    result = load_conversations([first, second])
    assert result.counts["loaded"] == 4
    assert (result.counts["duplicates"], result.counts["kept"]) == (2, 2)
    assert result.warnings == [f"dropped 2 exact duplicate conversation(s) (first: {first}:3)"]


def test_skip_leaves_invalid_rows_out_and_writes_them_with_reasons(tmp_path):
    rows = [{"messages": turns(("user", "a"), ("assistant", "b"))},
            {"messages": turns(("user", "a"), ("bot", "b"))},
            {"prompt": "x", "completion": "y"}]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    path.write_text(path.read_text() + "{oops\n", encoding="utf-8")
    rejects = tmp_path / "out" / "rejects.jsonl"
    options = SftLoadOptions(on_error="skip", rejects_path=rejects, format="messages")
    result = load_conversations(path, options)
    assert len(result.conversations) == 1
    assert result.counts["skipped"] == 3 and result.counts["defects"] == 3
    assert result.warnings[0] == f"skipped 3 invalid record(s) (3 defect(s)); see {rejects}"
    written = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [(row["line"], [d["field"] for d in row["defects"]]) for row in written] == [
        (2, ["messages[1].role"]), (3, ["messages"]), (4, ["<line>"])]
    assert written[0]["record"] == rows[1] and written[2]["record"] == "{oops"
    assert not list(rejects.parent.glob(".rejects.jsonl.*"))  # the temp file was renamed


def test_raise_writes_no_rejects_and_validate_returns_every_defect(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"messages": turns(("user", "a"))}])
    rejects = tmp_path / "rejects.jsonl"
    with pytest.raises(DataError):
        load_conversations(path, SftLoadOptions(rejects_path=rejects))
    assert not rejects.exists()
    checked = validate_conversations(path)
    assert [str(d) for d in checked.defects] == [
        f"{path}:1: messages: no assistant turn, so nothing to learn"]
    assert checked.conversations == [] and checked.counts["skipped"] == 1


# the conversation type -----------------------------------------------------------------------

def test_conversation_refuses_turns_that_break_the_rules():
    origin = Provenance("t", 1, "c1")
    with pytest.raises(ValueError, match="^conversation c1: user follows user"):
        Conversation((Message("user", "a"), Message("user", "b"), Message("assistant", "c")),
                     origin)
    with pytest.raises(ValueError, match="empty or whitespace-only assistant turn"):
        Conversation((Message("user", "a"), Message("assistant", " ")), origin)
    ok = Conversation((Message("system", "s"), Message("user", "a"), Message("assistant", "b")),
                      origin)
    assert ok.content_key() == (("system", "s"), ("user", "a"), ("assistant", "b"))
    assert ok == Conversation(ok.messages, Provenance("elsewhere", 9))  # content, not origin


def test_role_rules_on_their_own():
    assert role_problems(["system", "user", "assistant", "user", "assistant"]) == []
    assert role_problems(["user"]) == [(None, "no assistant turn, so nothing to learn")]
    assert [i for i, _ in role_problems(["assistant", "assistant", "user"])] == [0, 1, 2]


def test_fingerprint_depends_on_content_and_order_not_format(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": turns(("user", "Hi"), ("assistant", "Hello."))},
        {"messages": turns(("user", "Bye"), ("assistant", "Goodbye."))}])
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Hi", "completion": "Hello."},
                                             {"prompt": "Bye", "completion": "Goodbye."}])
    a = load_conversations(chat).conversations
    b = load_conversations(pc).conversations
    assert fingerprint_conversations(a) == fingerprint_conversations(b)
    assert fingerprint_conversations(a) != fingerprint_conversations(a[::-1])
