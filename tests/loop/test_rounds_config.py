"""`prefalign loop`'s config: unknown keys and bad values are errors naming the key, found
before any model loads (the CLI exits 2 and writes nothing); each round's train config is the
base with the loop's keys set; the rounds table renders what the rounds' files say."""

from __future__ import annotations

import pytest

from loop.rounds_helpers import loop_config, write_yaml
from prefalign.cli.main import main
from prefalign.config import ConfigError
from prefalign.loop.rounds_config import load_loop_config, round_train_config
from prefalign.loop.rounds_table import render_table
from tiny_models import tiny_model_dir

BAD = [
    ({"sampling": {"tempreature": 0.7}}, r"sampling\.tempreature: unknown key; did you mean "
                                         r"'temperature'\?"),
    ({"sampling": {"n": 1}}, r"sampling\.n: a pair needs two samples"),
    ({"sampling": {"top_p": 1.5}}, r"sampling\.top_p: must be in \(0, 1\]"),
    ({"pairs": {"judges": ["nonsense"]}}, r"pairs: judge 'nonsense': unknown judge"),
    ({"pairs": {"combine": "piecewise"}}, r"piecewise needs --safety-judge and --threshold"),
    ({"pairs": {"strategy": "best"}}, r"pairs\.strategy: must be one of"),
    ({"pairs": {"min_margin": -1}}, r"--min-margin must be >= 0"),
    ({"train": {"settings": {"optim": {"lrr": 1e-5}}}}, r"optim\.lrr: unknown key; did you mean "
                                                        r"'lr'\?"),
    ({"train": {"config": "no/such.yaml"}}, r"no/such\.yaml: no such config file"),
    ({"train": {"settings": {"lora": {"enabled": True}}}}, r"lora\.merge_on_save"),
    ({"train": {"settings": {"loss": {"name": "kto"}}}}, r"kto takes unpaired examples"),
    ({"reference": "original", "train": {"settings": {"reference": {"strategy": "precomputed"}}}},
     r"reference: original .* frozen_copy \(got precomputed\)"),
    ({"eval": {"harmful": -1}}, r"eval: harmful must be >= 0"),
    ({"rounds": 0}, r"rounds: must be >= 1"),
    ({"prompts": []}, r"prompts: name at least one prompt file"),
    ({"rounds_": 2}, r"rounds_: unknown key; did you mean 'rounds'\?"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m[:24] for _, m in BAD])
def test_bad_configs_name_the_key(tmp_path, change, message):
    config = loop_config(tmp_path, tmp_path / "no-model-is-loaded")
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    with pytest.raises(ConfigError, match=message):
        load_loop_config(config)


def test_the_cli_refuses_a_bad_config_before_any_model_loads(tmp_path, capsys):
    config = loop_config(tmp_path, tmp_path / "no-such-model")
    path = write_yaml(tmp_path / "loop.yaml", config)
    assert main(["loop", "-c", str(path), "sampling.n=1"]) == 2
    assert "sampling.n: a pair needs two samples" in capsys.readouterr().err
    assert main(["loop", "-c", str(path), "sampling.nn=3"]) == 2
    assert "sampling.nn: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "loops").exists()  # nothing written


def test_overrides_and_print_config(tmp_path, capsys):
    config = loop_config(tmp_path, tmp_path / "model")
    path = write_yaml(tmp_path / "loop.yaml", config)
    assert main(["loop", "-c", str(path), "rounds=3", "sampling.n=5",
                 "train.settings.optim.lr=2e-5", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "rounds: 3" in printed and "n: 5" in printed and "lr: 2.0e-05" in printed
    loaded = load_loop_config(path, ["rounds=3", "train.settings.optim.lr=2e-5"])
    assert loaded.rounds == 3 and round_train_config(loaded, 1).optim.lr == 2e-5
    printed_file = tmp_path / "printed.yaml"
    assert main(["loop", "-c", str(path), "--print-config"]) == 0
    printed_file.write_text(capsys.readouterr().out, encoding="utf-8")
    assert load_loop_config(printed_file) == load_loop_config(path)  # it reads back the same


def test_each_round_trains_from_the_last_with_the_reference_asked_for(tmp_path):
    model = tmp_path / "model"
    previous = load_loop_config(loop_config(tmp_path, model, reference="previous", rounds=3))
    original = load_loop_config(loop_config(tmp_path, model, reference="original", rounds=3))
    loop_dir = tmp_path / "loops" / "loop"
    for r in (1, 2, 3):
        ours = round_train_config(previous, r)
        start = str(model) if r == 1 else str(loop_dir / f"round-{r - 1}" / "run" / "final")
        assert ours.model.source == start
        assert (ours.run.output_dir, ours.run.name) == (str(loop_dir / f"round-{r}"), "run")
        assert ours.data.train == (str(loop_dir / f"round-{r}" / "pairs.jsonl"),)
        assert ours.reference.source is None
        assert round_train_config(original, r).reference.source == (None if r == 1 else str(model))
    assert previous.sampling.settings(3).seed == previous.sampling.seed + 2


def test_the_table_shows_missing_stages_as_dashes():
    rows = [{"round": 0, "model": "m", "eval": {"harmful_refusal": {"rate": 0.25, "low": 0.1,
                                                                    "high": 0.5, "n": 8}}},
            {"round": 1, "counts": {"written": 3, "tie": 1}, "judge_mean": 0.5, "eval": None}]
    table = render_table(rows)
    assert "| 0 (original) | — | — | — | 25.0% [10.0–50.0%] (n=8) | — |" in table
    assert "| 1 | 3 | 1 | 0.50 | — | — | — | — | — | — |" in table


def test_the_table_gives_a_rounds_minutes_with_its_evaluation_apart():
    rows = [{"round": 1, "counts": {}, "eval": None,
             "seconds": {"samples": 300.0, "pairs": 6.0, "train": 294.0, "eval": 90.0}},
            {"round": 2, "counts": {}, "eval": None, "seconds": {"samples": 120.0}}]
    lines = render_table(rows).splitlines()
    assert lines[4].endswith("| 10.0 (1.5) |") and lines[5].endswith("| 2.0 |")


def test_a_missing_model_or_prompt_file_is_named_before_anything_is_written(
        tmp_path, capsys, tiny_tokenizer):
    config = loop_config(tmp_path, tmp_path / "no-such-model")
    assert main(["loop", "-c", str(write_yaml(tmp_path / "loop.yaml", config))]) == 2
    assert "no-such-model: no such file or directory" in capsys.readouterr().err
    config = loop_config(tmp_path, tiny_model_dir(tmp_path, tiny_tokenizer),
                         prompts=["missing.jsonl"])
    assert main(["loop", "-c", str(write_yaml(tmp_path / "loop.yaml", config))]) == 2
    assert "prompts: missing.jsonl: no such prompt file" in capsys.readouterr().err
    assert not (tmp_path / "loops").exists()
