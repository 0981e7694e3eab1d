#!/bin/bash
# A second held-out look at streaming facts (issue 11, item 3): trials 3-8 of
# the facts task on Moby Dick (the grid of make eval runs trials 0-2), for the
# paper's score, the streaming score chosen on the development text
# (hash q/logit+red) and the baselines, both models. About 20 minutes on the
# 2-core machine. Rows -> docs/eval/stream_facts_extra.jsonl; then
#   python3 bench/eval/stream_facts_extra.py   # the table, grid rows included
set -euo pipefail
cd "$(dirname "$0")/../.."
set -a; . .cache/deps.env; set +a
out=docs/eval/stream_facts_extra.jsonl
: > "$out"
B=policy=hash,probe=query
for m in "$SMOLLM_GGUF" "$GEMMA_GGUF"; do
  cfg=(--config full)
  for k in 0.3 0.5 0.7; do
    for s in "$B,score=instant" "$B,score=decayed,estimate=logit,redundancy=1" policy=sink-recent policy=knorm; do
      cfg+=(--config "$s,keep=$k")
    done
  done
  build/llamacpp/hashevict-eval facts --text "$TEXT2_FILE" --lengths 1024,2048,4096 --chunk 128 --facts 4 \
    --scenario stream --trial-from 3 --trials 9 --threads 2 --model "$m" "${cfg[@]}" >> "$out"
done
