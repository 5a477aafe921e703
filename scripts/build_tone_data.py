"""Build the bundled tone data set from its hand-written sources (run from the repository root).

Each file in scripts/tone_data/ is one service domain: a made-up company, its brand-voice system
prompt, and per topic a few customer messages (some after a shared first exchange), each with one
accepted reply and two rejected ones holding the same facts: one shorter (curt, robotic,
dismissive) and one longer (bureaucratic padding, scripted filler). Every item thus yields one
pair where the accepted reply is the longer and one where it is the shorter, so length alone
ranks exactly half the pairs right, in words, characters and SmolLM2 tokens alike. This script
checks the rules of scripts/tone_data/README.md (length ratio and direction, fictional contact
details, no repeated text), gives ~40% of the items the company's system prompt, holds out one
topic per domain (the lowest sha256 of "domain/topic"), and writes tone_train.jsonl.gz and
tone_heldout.jsonl.gz (gzip mtime 0: byte-for-byte reproducible). `--check` writes nothing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from prefalign.data.load import LoadOptions, load_pairs
from prefalign.data.tokenize import token_lengths
from prefalign.data.tokenizer import load_tokenizer

SOURCES = Path("scripts/tone_data")
OUT = Path("src/prefalign/resources/data")
FILES = {"train": "tone_train.jsonl.gz", "heldout": "tone_heldout.jsonl.gz"}
MAX_RATIO = 1.25  # the longer reply of a pair is at most 25% longer, by words and by characters
TOKENIZER = "smollm2-135m-instruct"  # the default model, whose tokens the audit and eval count
SYSTEM_PERCENT = 40  # items that carry the company's system prompt; the rest use "CUSTOM"
LENGTHS = ("shorter", "longer")  # the rejected reply's length against the accepted one
EMAIL = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
# Digit groups joined by spaces or dashes; checked when they hold 7+ digits (a bare 8-digit PUK
# code is not a phone number).
PHONE = re.compile(r"\+?\(?\d[\d()]*(?:[ -]\(?\d[\d()]*){1,4}")
FICTIONAL_PHONE = re.compile(r"555-01\d\d")
WEB_NAME = re.compile(r"\b[\w-]+\.(?:com|net|org|io|co|uk|us|gov)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Item:
    """One customer message with its accepted reply and the two rejected ones."""

    domain: str
    topic: str
    index: int
    history: tuple[tuple[str, str], ...]  # (user, assistant) exchanges shared by both replies
    user: str
    accepted: str
    rejected: dict[str, str]  # "shorter" / "longer" -> reply

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.topic}/{self.index}"


@dataclass(frozen=True)
class Domain:
    name: str
    company: str
    system: str
    topics: dict[str, list[Item]]


def load_domain(path: Path) -> Domain:
    """One source file; a missing or mistyped key raises ValueError naming file and item."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = data["domain"]
    topics = {topic: [_item(path, name, topic, i, raw) for i, raw in enumerate(items, start=1)]
              for topic, items in data["topics"].items()}
    return Domain(name, data["company"], data["system"].strip(), topics)


def _item(path: Path, domain: str, topic: str, index: int, raw: dict) -> Item:
    where = f"{path}: {domain}/{topic} item {index}"
    expected = {"user", "accepted", "rejected"} | ({"history"} if "history" in raw else set())
    if set(raw) != expected or set(raw["rejected"]) != set(LENGTHS):
        raise ValueError(f"{where}: keys {sorted(raw)} / rejected {sorted(raw['rejected'])}; "
                         f"expected {sorted(expected)} / {list(LENGTHS)}")
    history = tuple((turn["user"].strip(), turn["assistant"].strip())
                    for turn in raw.get("history", ()))
    rejected = {kind: raw["rejected"][kind].strip() for kind in LENGTHS}
    return Item(domain, topic, index, history, raw["user"].strip(), raw["accepted"].strip(),
                rejected)


def length_problems(accepted: str, rejected: str, kind: str) -> list[str]:
    """Why a pair breaks the length rules: the rejected reply must be `kind` (shorter / longer)
    than the accepted one by words and by characters, and the longer at most MAX_RATIO longer."""
    problems = []
    for unit, a, r in (("words", len(accepted.split()), len(rejected.split())),
                       ("chars", len(accepted), len(rejected))):
        if (r < a) != (kind == "shorter") or r == a:
            problems.append(f"rejected {kind} should be {kind} in {unit}: accepted {a}, "
                            f"rejected {r}")
        elif max(a, r) > MAX_RATIO * min(a, r):
            problems.append(f"{unit}: {max(a, r)} is over {MAX_RATIO} x {min(a, r)} "
                            f"(accepted {a}, rejected {r})")
    return problems


def contact_problems(text: str) -> list[str]:
    """Contact details must be fictional: *.example addresses, 555-01xx phone numbers."""
    problems = [f"address {m.group(0)!r} is not *.example" for m in EMAIL.finditer(text)
                if not m.group(1).endswith(".example")]
    problems += [f"phone {m.group(0)!r} is not 555-01xx" for m in PHONE.finditer(text)
                 if sum(c.isdigit() for c in m.group(0)) >= 7
                 and not FICTIONAL_PHONE.fullmatch(m.group(0))]
    problems += [f"web name {m.group(0)!r}: use *.example" for m in WEB_NAME.finditer(text)]
    return problems


def item_problems(item: Item) -> list[str]:
    texts = [item.user, item.accepted, *item.rejected.values(),
             *(text for turn in item.history for text in turn)]
    problems = [p for kind, reply in item.rejected.items()
                for p in length_problems(item.accepted, reply, kind)]
    problems += [p for text in texts for p in contact_problems(text)]
    return [f"{item.id}: {p}" for p in problems]


def repeated_texts(items: list[Item]) -> list[str]:
    """Replies and messages written twice (a copied reply would teach a template, not a tone)."""
    seen: dict[str, str] = {}
    problems = []
    for item in items:
        for text in (item.user, item.accepted, *item.rejected.values()):
            key = " ".join(text.lower().split())
            if key in seen and seen[key] != item.id:
                problems.append(f"{item.id}: text repeated from {seen[key]}: {text[:60]!r}")
            seen.setdefault(key, item.id)
    return problems


def token_problems(rows: list[dict], tokenizer_name: str = TOKENIZER) -> list[str]:
    """Pairs whose rejected reply is not shorter / longer in tokens as it is in words: bureaucratic
    prose packs more characters into a token than chatty prose, so characters alone do not
    settle it. Counted as training counts them (chat template, up to the end-of-turn token)."""
    pairs = load_pairs(rows, LoadOptions(format="accepted_rejected", dedupe=False)).pairs
    lengths = token_lengths(pairs, load_tokenizer(tokenizer_name))
    problems = []
    for row, (_, chosen, rejected) in zip(rows, lengths, strict=True):
        kind = row["rejected_length"]
        if (rejected < chosen) != (kind == "shorter") or rejected == chosen:
            problems.append(f"{row['id']}: rejected {kind} should be {kind} in tokens: "
                            f"accepted {chosen}, rejected {rejected}")
    return problems


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def heldout_topic(domain: Domain) -> str:
    """The domain's held-out topic: the lowest sha256 of "domain/topic" (fixed, not hand-picked)."""
    return min(domain.topics, key=lambda topic: _hash(f"{domain.name}/{topic}"))


def records(item: Item, domain: Domain) -> list[dict]:
    """The item's two Accepted/Rejected records: rejected shorter, then rejected longer."""
    uses_system = _hash(item.id) % 100 < SYSTEM_PERCENT
    users = [user for user, _ in item.history] + [item.user]
    shared = [assistant for _, assistant in item.history]
    return [{"id": f"{item.id}-{kind}", "domain": item.domain, "topic": item.topic,
             "company": domain.company, "rejected_length": kind,
             "Template": [domain.system if uses_system else "CUSTOM"], "User": users,
             "Accepted": [*shared, item.accepted], "Rejected": [*shared, item.rejected[kind]]}
            for kind in LENGTHS]


def build(folder: Path = SOURCES) -> tuple[dict[str, list[dict]], list[str]]:
    """Records per split, and every rule the sources break (empty when they are clean)."""
    domains = [load_domain(path) for path in sorted(folder.glob("*.yaml"))]
    items = [item for domain in domains for topic in domain.topics.values() for item in topic]
    problems = [p for item in items for p in item_problems(item)] + repeated_texts(items)
    splits: dict[str, list[dict]] = {"train": [], "heldout": []}
    for domain in domains:
        held = heldout_topic(domain)
        for topic, topic_items in domain.topics.items():
            split = splits["heldout" if topic == held else "train"]
            split.extend(r for item in topic_items for r in records(item, domain))
    return splits, problems


def write_gz(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    tmp.replace(path)


def describe(splits: dict[str, list[dict]]) -> str:
    lines = []
    for name, rows in splits.items():
        multi = sum(len(row["User"]) > 1 for row in rows)
        system = sum(row["Template"] != ["CUSTOM"] for row in rows)
        topics = {(row["domain"], row["topic"]) for row in rows}
        lines.append(f"{name}: {len(rows)} pairs, {len(topics)} domain-topics, "
                     f"{multi} multi-turn ({multi / len(rows):.0%}), {system} with a system prompt")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the sources, write nothing")
    args = parser.parse_args(argv)
    splits, problems = build()
    if not problems:  # token counts only make sense once every record is well formed
        problems = token_problems(splits["train"] + splits["heldout"])
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    print(describe(splits))
    if not args.check:
        for name, rows in splits.items():
            write_gz(OUT / FILES[name], rows)
            print(f"wrote {OUT / FILES[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
