"""The table of bench/eval/stream_facts_extra.sh: streaming facts on Moby Dick,
correct / prompts per keep ratio over the grid's trials 0-2
(docs/eval/results.jsonl) and the extra trials 3-8
(docs/eval/stream_facts_extra.jsonl), each part also shown alone."""
import collections
import json
import pathlib

EVAL = pathlib.Path(__file__).resolve().parents[2] / "docs" / "eval"
# The grid whose streaming facts rows docs/eval/results.md reports.
GRID = "--lengths 1024,2048,4096 --chunk 128 --trials 3 --facts 4"
# The extra run's --config specs (without keep) -> run_eval's policy labels.
LABELS = {
    "full": "full",
    "policy=hash,probe=query,score=instant": "hash q/instant",
    "policy=hash,probe=query,score=decayed,estimate=logit,redundancy=1": "hash q/logit+red",
    "policy=sink-recent": "sink+recent",
    "policy=knorm": "knorm",
}
# The model field's first word in the extra rows -> run_eval's model label.
MODELS = {"llama": "SmolLM2-135M", "gemma3": "Gemma3-270M"}


def keep_of(row):
    return "-" if row["policy"] == "full" else f"{row['keep']:.1f}"


def main():
    counts = collections.defaultdict(lambda: [0, 0])  # (model, policy, keep, part) -> [right, prompts]

    def add(model, policy, row, part):
        c = counts[(model, policy, keep_of(row), part)]
        c[0] += bool(row["correct"])
        c[1] += 1

    for line in open(EVAL / "stream_facts_extra.jsonl"):
        r = json.loads(line)
        spec = r["config"].rpartition(",keep=")[0] or r["config"]
        add(MODELS[r["model"].split()[0]], LABELS[spec], r, "extra")
    for line in open(EVAL / "results.jsonl"):
        r = json.loads(line)
        if (r.get("task"), r.get("scenario"), r.get("grid")) != ("facts", "stream", GRID) or r.get("runtime") == "fork":
            continue
        if r.get("label_model") in MODELS.values() and r.get("label_policy") in LABELS.values():
            add(r["label_model"], r["label_policy"], r, "grid")

    for model in MODELS.values():
        print("##", model)
        for policy in LABELS.values():
            cells = []
            for keep in ["-"] if policy == "full" else ["0.3", "0.5", "0.7"]:
                g, x = counts[(model, policy, keep, "grid")], counts[(model, policy, keep, "extra")]
                cells.append(f"{g[0] + x[0]}/{g[1] + x[1]} (grid {g[0]}/{g[1]}, extra {x[0]}/{x[1]})")
            print(f"| {policy} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
