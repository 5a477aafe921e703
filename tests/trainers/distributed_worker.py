"""Entry point for the multi-process tests: `torchrun ... distributed_worker.py CONFIG.json
[--resume]`.

Trains the config (a `Config.to_dict()` in JSON) unchanged; the run directory holds the result.
"""

from __future__ import annotations

import json
import sys

from prefalign.config import config_from_dict
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop.run import end_processes

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        config = config_from_dict(json.load(handle))
    try:
        result = train(config, resume="--resume" in sys.argv[2:])
    finally:
        end_processes()  # as `prefalign train` does
    print(f"rank-done outcome={result.outcome} steps={result.steps}", flush=True)
