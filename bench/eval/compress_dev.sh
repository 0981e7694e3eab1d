#!/bin/bash
# How the compression's form was chosen (docs/eval/README.md, "Choosing the
# compression's form (0.6)"): compress after prefill on facts prompts over the
# development text (Pride and Prejudice, trials 100-123: other prompts than the
# grid's, and never Moby Dick), the forms with and without the LOCAL and
# TRAILING flags against the baselines, both models. About 8 minutes on the
# 2-core machine. Rows -> build/eval-dev/compress_dev.jsonl, then a table of
# right answers per model, form and keep ratio. DEV_TRIALS_END=N stops before
# trial N (a short check: DEV_TRIALS_END=102).
set -euo pipefail
cd "$(dirname "$0")/../.."
set -a; . .cache/deps.env; set +a
out=build/eval-dev/compress_dev.jsonl
mkdir -p "$(dirname "$out")"
: > "$out"
for m in "$SMOLLM_GGUF" "$GEMMA_GGUF"; do
  cfg=(--config full)
  for k in 0.3 0.5; do
    for f in cosine cosine+local cosine+trailing cosine+local+trailing; do
      cfg+=(--config "policy=hash,probe=query,score=instant,form=$f,keep=$k")
    done
    cfg+=(--config "policy=sink-recent,keep=$k" --config "policy=knorm,keep=$k")
  done
  build/llamacpp/hashevict-eval facts --text "$TEXT_FILE" --lengths 1024,2048,4096 --chunk 128 --facts 4 \
    --scenario prefill --trial-from 100 --trials "${DEV_TRIALS_END:-124}" --threads 2 --model "$m" "${cfg[@]}" >> "$out"
done
python3 - "$out" <<'PY'
import collections, json, sys
right, n = collections.Counter(), collections.Counter()
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        key = (r["model"], r["config"].replace("policy=hash,probe=query,score=instant,", "hash "))
        right[key] += r["correct"]
        n[key] += 1
for key in n:
    print(f"{key[0]:<22} {key[1]:<40} {right[key]:>3} / {n[key]}")
PY
