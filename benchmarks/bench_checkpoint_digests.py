"""What the sha256 digests cost a checkpoint of a SmolLM2-135M-shaped full fine-tune (CPU).

Builds the architecture with random weights (no download), takes one AdamW step so the
optimizer holds its two moments, then times `save_checkpoint` (which hashes every file it
wrote, reading them back from the page cache), `verify_checkpoint` (hashes them again) and
`load_checkpoint` (verifies, then loads), and sha256 alone over the same bytes.

    python benchmarks/bench_checkpoint_digests.py --out /tmp/digests
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prefalign.integrity import sha256_file
from prefalign.trainers.loop.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint

# SmolLM2-135M's shape (its config.json).
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    tie_word_embeddings=True, max_position_embeddings=2048)


def _timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch directory (emptied)")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, SMOLLM2_135M["vocab_size"], (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    path, save_s = _timed(lambda: save_checkpoint(
        args.out, 1, policy=model, optimizer=optimizer, scheduler=None, position={"step": 1},
        keep_last=1))
    files = sorted(p for p in path.iterdir() if p.name != "COMPLETE")
    _, hash_s = _timed(lambda: [sha256_file(p) for p in files])
    check, verify_s = _timed(lambda: verify_checkpoint(path))
    _, load_s = _timed(lambda: load_checkpoint(path, policy=model, optimizer=optimizer,
                                               scheduler=None))
    size = sum(p.stat().st_size for p in files)
    print(json.dumps({"bytes": size, "save_s": round(save_s, 2), "sha256_s": round(hash_s, 2),
                      "sha256_gb_per_s": round(size / hash_s / 1e9, 2),
                      "verify_s": round(verify_s, 2), "load_s": round(load_s, 2),
                      "verified": check.ok, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
