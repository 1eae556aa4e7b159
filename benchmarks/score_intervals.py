"""Bootstrap intervals of the test scores, and paired differences between models scored on the same records.

    python benchmarks/score_intervals.py trees=benchmarks/results/runtime_compactrto-ecg_labels_full.json \
        st2=benchmarks/results/runtime_compactst2-ecg_labels_full.json benchmarks/results/baseline_ecg.json

Reads the per-record predictions that benchmarks/eval_tslm.py, eval_runtime.py and baseline.py keep (``predictions``;
a baseline file holds its test split's). Evaluations of the same records in the same order (the same fingerprint)
form a group. For each model: the score on all records and its 95 % bootstrap percentile interval (2,000 resamples
of the records); the challenge score and AF-class F1 for ECG rhythm, macro-F1 otherwise, beside the issue's goal.
Within a group, every pair's difference with its paired interval (the same resampled records for both) and the share
of resamples in which the second scores higher. Writes benchmarks/results/score_intervals.json and .md
(edge_tslm.score_intervals does the arithmetic, scipy.stats.bootstrap the resampling).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from edge_tslm.machine import machine
from edge_tslm.score_intervals import difference, interval

RESULTS = Path(__file__).resolve().parent / "results"
# The issues' goals on these test splits (issue 3): ECG challenge score and AF-class F1, HAR macro-F1.
GOALS = {"challenge": 0.83, "af_f1": 0.85, "macro_f1": 0.94}


def load(arg: str) -> tuple[str, str, dict]:
    """A results file, or NAME=FILE -> (the name, or the file's stem; its task; its test predictions)."""
    name, _, file = arg.rpartition("=")
    path = Path(file)
    if not path.is_file():
        raise SystemExit(f"no such results file: {path}")
    d = json.loads(path.read_text())
    if "predictions" in d:
        pred, task = d["predictions"], d.get("task", "")
        if d.get("split", "test") != "test":
            raise SystemExit(f"{path}: scored on the {d['split']} split; these intervals are for test-split results")
    elif "result" in d and "predictions" in d["result"].get("test", {}):
        pred, task = d["result"]["test"]["predictions"], d["result"].get("task", "")
    else:
        raise SystemExit(f"{path} holds no per-record predictions; rerun the command it records "
                         f"({d.get('command', 'its benchmark')}), which now keeps them")
    task = {"ecg": "ecg_rhythm"}.get(task, task)
    return name or path.stem, task, pred


def metrics_for(task: str) -> tuple[str, ...]:
    return ("challenge", "af_f1") if task in ("ecg_rhythm", "physionet2017") else ("macro_f1",)


def run(args: list[str], n_resamples: int, seed: int) -> dict:
    groups: dict[str, dict] = {}
    for arg in args:
        name, task, pred = load(arg)
        g = groups.setdefault(pred["fingerprint"], {"task": task, "n": len(pred["true"]), "models": {}, "tasks": {}})
        if name in g["models"]:
            raise SystemExit(f"two results named {name!r} for the same records; name them apart with NAME=FILE")
        g["models"][name], g["tasks"][name] = pred, task  # one task's windows may be read another way (har, har_gait)
    out = []
    for key, g in groups.items():
        mets = metrics_for(g["task"])
        models = {name: {m: interval(pred, m, n_resamples, seed) for m in mets} for name, pred in g["models"].items()}
        pairs = [{"a": a, "b": b, **{m: difference(g["models"][a], g["models"][b], m, n_resamples, seed) for m in mets}}
                 for a, b in itertools.combinations(g["models"], 2)]
        out.append({"fingerprint": key, "task": g["task"], "n": g["n"], "metrics": list(mets), "models": models,
                    "model_tasks": g["tasks"], "pairs": pairs})
    return {"groups": out, "n_resamples": n_resamples, "seed": seed, "level": 0.95, "goals": GOALS,
            "machine": machine(), "command": "python " + " ".join(sys.argv)}


def _goal_note(ci: dict, goal: float) -> str:
    if ci["score"] >= goal:
        return "met"
    return "missed; the goal is inside the interval" if ci["high"] >= goal else "missed beyond the interval"


def markdown(res: dict) -> str:
    L = ["# Test scores with bootstrap intervals", "", f"`{res['command']}`", "",
         f"95 % percentile intervals from {res['n_resamples']:,} resamples of the test records (seed {res['seed']}); "
         "a difference's interval resamples the same records for both models (paired). "
         f"Machine: {res['machine']['cpu']}.", ""]
    for g in res["groups"]:
        tasks = sorted(set(g["model_tasks"].values()))
        L += [f"## {' / '.join(tasks)}: the same {g['n']:,} test records (fingerprint {g['fingerprint']})", "",
              "| model | task | " + " | ".join(f"{m} [95 % interval] | goal {GOALS[m]}" for m in g["metrics"]) + " |",
              "|---|---|" + "---:|---|" * len(g["metrics"])]
        for name, cis in g["models"].items():
            cells = [f"{c['score']:.4f} [{c['low']:.4f}, {c['high']:.4f}] | {_goal_note(c, GOALS[m])}" for m, c in cis.items()]
            L.append(f"| {name} | {g['model_tasks'][name]} | " + " | ".join(cells) + " |")
        if g["pairs"]:
            L += ["", "| b − a | " + " | ".join(f"{m} difference [95 % interval], share of resamples b > a" for m in g["metrics"]) + " |",
                  "|---|" + "---:|" * len(g["metrics"])]
            for p in g["pairs"]:
                cells = [f"{p[m]['difference']:+.4f} [{p[m]['low']:+.4f}, {p[m]['high']:+.4f}], {p[m]['b_above_share']:.2f}"
                         for m in g["metrics"]]
                L.append(f"| {p['b']} − {p['a']} | " + " | ".join(cells) + " |")
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results JSON files that keep per-record predictions, each FILE or NAME=FILE")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "score_intervals.json")
    a = ap.parse_args(argv)
    if a.resamples < 100:
        ap.error(f"--resamples {a.resamples} is too few for a 95 % interval; use at least 100 (default 2,000)")
    res = run(a.results, a.resamples, a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    a.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
