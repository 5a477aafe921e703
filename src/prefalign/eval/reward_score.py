"""`prefalign rm score`: a trained reward model's score for each prompt/response row of a file.

Rows: `prompt` (a string, or chat messages ending with a user turn) with `response` (a
string), or `messages` (a conversation whose last message is the assistant's reply). Each is
rendered with the run's chat template and tokenised exactly as a training pair's chosen side
(same truncation), so a score is the reward training would have given the reply. Every row is
checked before anything is scored; a bad one is an error naming FILE:LINE and the field.
The output holds the input rows unchanged, in order, with `score` added (replacing any
`score` they had), written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from prefalign.data.formats._common import MISSING, RecordCheck
from prefalign.data.io import iter_records
from prefalign.data.tokenize import tokenize_pairs
from prefalign.data.types import DataError, Defect, Message, PreferencePair, Provenance
from prefalign.data.writers import write_jsonl_atomic
from prefalign.engine.forward.onednn import CpuMatmul, cpu_matmul
from prefalign.engine.forward.reward import sequence_rewards
from prefalign.eval.reward import RewardModel, load_reward_run

SCORE_FIELD = "score"


def score_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path, *,
               batch_size: int = 8, matmul: CpuMatmul = "auto") -> int:
    """Score every row of `input_path` with the reward model at `run_dir` into `output_path`;
    returns the number of rows. Raises DataError listing every invalid row. matmul: as
    `train.cpu_matmul`."""
    rows, items = read_rows(Path(input_path))
    reward = load_reward_run(run_dir)
    with cpu_matmul(matmul):
        scores = score_items(reward, items, batch_size=batch_size)
    output = [{**row, SCORE_FIELD: score} for row, score in zip(rows, scores, strict=True)]
    return write_jsonl_atomic(output, output_path)


def score_rows(reward: RewardModel, rows: Sequence[Mapping], *, batch_size: int = 8) -> list[float]:
    """The scores of in-memory rows (the same fields as a file's), for a judge that keeps the
    model loaded (`load_reward_run` once). Raises DataError naming each bad row by index."""
    _, items = read_rows(list(rows))
    return score_items(reward, items, batch_size=batch_size)


def score_items(reward: RewardModel, items: Sequence[PreferencePair], *,
                batch_size: int = 8) -> list[float]:
    """The reward of each item's chosen side, tokenised as training tokenised pairs."""
    tokenized = tokenize_pairs(items, reward.tokenizer, reward.truncation).pairs
    sequences = [pair.input_ids("chosen") for pair in tokenized]
    return sequence_rewards(reward.model, sequences, batch_size=batch_size).tolist()


def read_rows(source: Path | list[Mapping]) -> tuple[list[dict], list[PreferencePair]]:
    """The raw rows and, for each, its prompt and response as a pair whose two sides are the
    response (only the chosen side is scored)."""
    rows, items, defects = [], [], []
    for record in iter_records(source):
        if record.defect is not None:
            defects.append(record.defect)
            continue
        check = RecordCheck(Provenance(record.source, record.line))
        parsed = _prompt_and_response(check, record.data)
        defects += check.defects
        if parsed is not None and not check.defects:
            prompt, response = parsed
            origin = Provenance(record.source, record.line)
            rows.append(record.data)
            items.append(PreferencePair(tuple(prompt), response, response, origin))
    where = str(source) if isinstance(source, Path) else "the rows"
    if not rows and not defects:
        defects.append(Defect(where, 1, "<source>", "no records"))
    if defects:
        raise DataError(defects, summary=f"{len(defects)} defect(s) in {where}; nothing scored")
    return rows, items


def _prompt_and_response(check: RecordCheck,
                         data: Mapping) -> tuple[list[Message], str] | None:
    if "messages" in data and "prompt" not in data:
        messages = check.messages(check.get(data, "messages"), "messages")
        if messages is None:
            return None
        last = len(messages) - 1
        if messages[last].role != "assistant":
            check.add(f"messages[{last}].role", "the last message must be the assistant's reply "
                                                f"to score, got {messages[last].role}")
            return None
        prompt = messages[:last]
        return (prompt, messages[last].content) if check.prompt_roles(prompt, "messages") \
            else None
    prompt_value = check.get(data, "prompt")
    response = check.text(check.get(data, "response"), "response", "response")
    if isinstance(prompt_value, list):
        prompt = check.messages(prompt_value, "prompt")
        if prompt is not None and not check.prompt_roles(prompt, "prompt"):
            prompt = None
    else:
        text = check.text(prompt_value, "prompt", "prompt") if prompt_value is not MISSING \
            else None
        prompt = None if text is None else [Message("user", text)]
    return (prompt, response) if prompt is not None and response is not None else None
