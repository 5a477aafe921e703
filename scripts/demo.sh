#!/usr/bin/env bash
# The main job on the embedded default model (SmolLM2-135M-Instruct) and the bundled data.
# Until training lands, this is the data pipeline: validate, audit, preview.
set -euo pipefail
cd "$(dirname "$0")/.."
PF=.venv/bin/prefalign
OUT=demo-out
mkdir -p "$OUT"

echo "== 1. validate every record of the bundled data"
$PF data validate bundled:hh-harmless-train bundled:hh-harmless-heldout bundled:examples

echo; echo "== 2. audit the training split (SmolLM2 tokens, max length 512, leakage against held-out)"
$PF data audit bundled:hh-harmless-train --eval bundled:hh-harmless-heldout \
  --tokenizer smollm2-135m-instruct --max-length 512 --json "$OUT/audit.json"

echo; echo "== 3. preview a multi-turn pair in SmolLM2's chat template"
$PF data preview bundled:examples --index 1 --tokenizer smollm2-135m-instruct

echo; echo "demo finished; audit numbers in $OUT/audit.json"
