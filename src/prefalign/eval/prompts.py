"""Evaluation prompt sets: the vendored harmful and benign sets, user files, and the default sample.

Harmful prompts should be refused (refusal rate: higher is safer); benign prompts should be
answered (over-refusal rate: lower is better). The vendored files are written by
`scripts/vendor_prompts.py`; licences and attribution are in resources/data/ATTRIBUTION.md.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from prefalign.data.io import iter_records, json_type
from prefalign.data.types import DataError, Defect, Message

Kind = Literal["harmful", "benign"]
KINDS: tuple[Kind, ...] = ("harmful", "benign")
UNCATEGORISED = "uncategorised"
_DATA = files("prefalign") / "resources" / "data" / "prompts"


@dataclass(frozen=True)
class PromptItem:
    """One single-turn evaluation prompt. id: "SET:KEY", unique across the shipped sets."""

    id: str
    set: str
    kind: Kind
    category: str
    prompt: str

    @property
    def messages(self) -> tuple[Message, ...]:
        """The prompt as a chat (one user turn; the template adds its default system turn)."""
        return (Message("user", self.prompt),)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "set": self.set, "kind": self.kind, "category": self.category,
                "prompt": self.prompt}


@dataclass(frozen=True)
class PromptSetInfo:
    """A vendored prompt set: its kind, file (under resources/data/prompts), licence and origin."""

    name: str
    kind: Kind
    file: str
    license: str
    origin: str

    @property
    def path(self) -> Path:
        return Path(str(_DATA / self.file))

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "license": self.license,
                "origin": self.origin, "path": str(self.path)}


PROMPT_SETS: dict[str, PromptSetInfo] = {
    "advbench": PromptSetInfo("advbench", "harmful", "advbench.jsonl", "MIT",
                              "AdvBench harmful behaviors (Zou et al. 2023), 520 prompts"),
    "harmbench": PromptSetInfo("harmbench", "harmful", "harmbench.jsonl", "MIT",
                               "HarmBench standard text behaviors (Mazeika et al. 2024), 200"),
    "xstest-unsafe": PromptSetInfo("xstest-unsafe", "harmful", "xstest-unsafe.jsonl", "CC-BY-4.0",
                                   "XSTest v2 unsafe contrast prompts (Röttger et al. 2024), 200"),
    "xstest-safe": PromptSetInfo("xstest-safe", "benign", "xstest-safe.jsonl", "CC-BY-4.0",
                                 "XSTest v2 safe prompts (Röttger et al. 2024), 250"),
    "jbb-benign": PromptSetInfo("jbb-benign", "benign", "jbb-benign.jsonl", "MIT",
                                "JBB-Behaviors benign behaviors (Chao et al. 2024), 100"),
}
DEFAULT_SETS: tuple[str, ...] = tuple(PROMPT_SETS)


def load_prompt_set(name_or_path: str | Path, *, kind: Kind | None = None) -> list[PromptItem]:
    """A vendored set by name (see PROMPT_SETS), or a user's .jsonl / .csv file.

    A user file needs a `prompt` field per row; optional `id`, `kind` (harmful | benign),
    `category` and `set` fields (CSV headers match case-insensitively). Rows without a `kind`
    take the `kind` argument; the set defaults to the file's stem and ids to "SET:LINE".
    Raises DataError listing every defect as FILE:LINE: FIELD: message.
    """
    if isinstance(name_or_path, str) and name_or_path in PROMPT_SETS:
        info = PROMPT_SETS[name_or_path]
        return _load_file(info.path, kind=info.kind, set_name=info.name)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no prompt set or file {str(name_or_path)!r}; name one of {sorted(PROMPT_SETS)} "
            f"or give a .jsonl / .csv file with a 'prompt' column"
        )
    return _load_file(path, kind=kind, set_name=path.stem)


def _load_file(path: Path, *, kind: Kind | None, set_name: str) -> list[PromptItem]:
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    items: list[PromptItem] = []
    defects: list[Defect] = []
    seen_ids: set[str] = set()
    for line, row, defect in rows:
        if defect is not None:
            defects.append(defect)
            continue
        item = _to_item(str(path), line, row, kind, set_name, defects)
        if item is not None and item.id in seen_ids:
            defects.append(Defect(str(path), line, "id", f"duplicate id {item.id!r}"))
        elif item is not None:
            seen_ids.add(item.id)
            items.append(item)
    if not items and not defects:
        defects.append(Defect(str(path), 1, "<file>", "no prompts in the file"))
    if defects:
        raise DataError(defects, f"{len(defects)} defect(s) in prompt file {path}")
    return items


_Row = tuple[int, dict | None, Defect | None]


def _jsonl_rows(path: Path) -> list[_Row]:
    return [(record.line, record.data, record.defect) for record in iter_records(path)]


def _csv_rows(path: Path) -> list[_Row]:
    """CSV rows numbered by the file line each starts on (quoted fields may span lines)."""
    name = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [column.strip().lower() for column in reader.fieldnames or []]
            if "prompt" not in header:
                found = ", ".join(reader.fieldnames or []) or "none"
                return [(1, None, Defect(name, 1, "prompt",
                                         f"no 'prompt' column (columns: {found})"))]
            return list(_numbered(reader, header))
    except UnicodeDecodeError as error:
        return [(1, None, Defect(name, 1, "<file>", f"not UTF-8 text: {error.reason}"))]
    except csv.Error as error:
        return [(1, None, Defect(name, 1, "<file>", f"not valid CSV: {error}"))]


def _numbered(reader: csv.DictReader, header: list[str]) -> Iterator[_Row]:
    start = reader.line_num + 1
    for raw in reader:
        row = dict(zip(header, raw.values(), strict=False))
        yield start, row, None
        start = reader.line_num + 1


def _to_item(source: str, line: int, row: dict | None, kind: Kind | None, set_name: str,
             defects: list[Defect]) -> PromptItem | None:
    """A PromptItem from one row, or None after adding the row's defects."""
    row = row or {}
    before = len(defects)
    prompt = _text_field(source, line, row, "prompt", None, defects)
    row_kind = _text_field(source, line, row, "kind", kind, defects)
    category = _text_field(source, line, row, "category", UNCATEGORISED, defects)
    set_value = _text_field(source, line, row, "set", set_name, defects)
    item_id = _text_field(source, line, row, "id", f"{set_value}:{line}", defects)
    if row_kind is not None and row_kind not in KINDS:
        defects.append(Defect(source, line, "kind", f"must be harmful or benign, got {row_kind!r}"))
    if len(defects) > before:
        return None
    return PromptItem(item_id, set_value, row_kind, category, prompt)  # type: ignore[arg-type]


def _text_field(source: str, line: int, row: dict, key: str, default: str | None,
                defects: list[Defect]) -> str | None:
    """A non-empty string field; a missing or empty optional field takes `default`."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip() and default is not None):
        if default is None:
            hint = " (or pass kind=...)" if key == "kind" else ""
            defects.append(Defect(source, line, key, f"missing{hint}"))
        return default
    if isinstance(value, int) and not isinstance(value, bool) and key == "id":
        value = str(value)
    if not isinstance(value, str):
        defects.append(Defect(source, line, key, f"expected a string, got {json_type(value)}"))
        return None
    if not value.strip():
        defects.append(Defect(source, line, key, "empty"))
        return None
    return value.strip()


def default_prompts(harmful: int = 100, benign: int = 100, seed: int = 0,
                    sets: Sequence[str | Path] | None = None) -> list[PromptItem]:
    """A seeded sample of `harmful` harmful and `benign` benign prompts, stratified by set.

    Each kind's count is split as evenly as possible over that kind's sets (the first sets take
    the remainder; a set too small to fill its share gives the rest to the others). Within a set
    the draw is a simple random sample seeded by (seed, set name), so adding or removing one set
    leaves the others' draws unchanged. Returns the harmful prompts, then the benign ones, each
    set's in file order. sets: names or files (default: every vendored set).
    """
    if harmful < 0 or benign < 0:
        raise ValueError(f"default_prompts: counts must be >= 0, got harmful={harmful}, "
                         f"benign={benign}")
    by_set = [load_prompt_set(entry) for entry in (DEFAULT_SETS if sets is None else sets)]
    ids = [item.id for items in by_set for item in items]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"default_prompts: prompt ids occur in more than one set: {repeated}")
    chosen: list[PromptItem] = []
    for kind, total in (("harmful", harmful), ("benign", benign)):
        groups = _group_by_set([item for items in by_set for item in items if item.kind == kind])
        counts = _allocate(total, [len(group) for group in groups.values()], kind)
        for (name, group), count in zip(groups.items(), counts, strict=True):
            chosen.extend(_sample(group, count, f"{seed}:{name}"))
    return chosen


def _group_by_set(items: Sequence[PromptItem]) -> dict[str, list[PromptItem]]:
    groups: dict[str, list[PromptItem]] = {}
    for item in items:
        groups.setdefault(item.set, []).append(item)
    return groups


def _allocate(total: int, sizes: Sequence[int], kind: str) -> list[int]:
    """Split `total` over sets of the given sizes as evenly as their sizes allow."""
    if total > sum(sizes):
        raise ValueError(f"asked for {total} {kind} prompts but the chosen sets hold only "
                         f"{sum(sizes)}; ask for fewer or add sets")
    counts = [0] * len(sizes)
    remaining = total
    open_sets = [i for i, size in enumerate(sizes) if size > 0]
    while remaining:
        share, extra = divmod(remaining, len(open_sets))
        for rank, i in enumerate(open_sets):
            given = min(sizes[i] - counts[i], share + (1 if rank < extra else 0))
            counts[i] += given
            remaining -= given
        open_sets = [i for i in open_sets if counts[i] < sizes[i]]
    return counts


def _sample(group: Sequence[PromptItem], count: int, seed: str) -> list[PromptItem]:
    """`count` items drawn without replacement by a string-seeded RNG, kept in file order."""
    # random.Random seeded by a str hashes it with sha512: stable across runs and PYTHONHASHSEED.
    picked = sorted(random.Random(seed).sample(range(len(group)), count))
    return [group[i] for i in picked]
