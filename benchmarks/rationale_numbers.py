"""Do the numbers in a generated ECG (or HAR) rationale match the signal? Compact artifacts, torch-free runtime.

    python benchmarks/rationale_numbers.py --artifact runs/compactrr-ecg --artifact runs/compactrrs8-ecg --per-class 5

For each record of the seeded stratified test subset (eval_tslm's), the artifact generates its rationale (greedy,
the training prompt plus "Explain briefly, then answer.") and the numbers it states are parsed and set against the
ones the data pipeline measured on the same record (`Sample.rationale`, written by edge_tslm.data.rationale from
edge_tslm.heartbeats): beats detected, mean heart rate, RR coefficient of variation, share of RR jumps. A model that
reads its RR numbers from the text can copy them; one that reads them from a series has to estimate them. A HAR
artifact's rationales state the axis means, the magnitude's standard deviation and the step rhythm (edge_tslm.rationale_check.HAR_RATIONALE_NUMBERS).
--ground also generates each with the measured numbers written in (edge_tslm.rationale_grounding), as streams do.
Writes benchmarks/results/rationale_numbers.json and .md with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge_tslm.data.subset import stratified_subset
from edge_tslm.machine import machine
from edge_tslm.prompts import parse_answer
from edge_tslm.rationale_check import ECG_RATIONALE_NUMBERS, HAR_RATIONALE_NUMBERS, stated_numbers
from edge_tslm.rationale_grounding import rationale_grounder
from edge_tslm.runtime.onnx_backend import OnnxBackend
from edge_tslm.train.examples import layout_kwargs, make_example
from edge_tslm.train.tasks import get_task

RESULTS = Path(__file__).resolve().parent / "results"
NUMBERS = ECG_RATIONALE_NUMBERS
def stated(text: str, task: str = "ecg_rhythm") -> dict[str, float]:
    """The numbers a rationale states: the stream's parse (edge_tslm.rationale_check), ECG's or HAR's patterns."""
    return stated_numbers(text, NUMBERS if task.startswith("ecg") else HAR_RATIONALE_NUMBERS)


def score(artifact: str, per_class: int, tokens: int, threads: int, ground: bool = False) -> dict:
    """ground: the rationale is generated with the record's measured numbers written in (edge_tslm.rationale_grounding,
    measured on the record as the data pipeline measured the reference), as the stream does by default."""
    be = OnnxBackend.from_pretrained(artifact, threads=threads)
    cfg = be.cfg
    if not cfg.task.startswith(("ecg", "har")):
        raise SystemExit(f"{artifact} is a {cfg.task!r} model; this benchmark reads ECG rhythm and HAR rationales only")
    samples = get_task(cfg.task).load("test", None)
    idx = stratified_subset(getattr(samples, "records", samples), per_class, 0)
    rows = []
    for i in idx:
        s = samples[i]
        ex = make_example(s, rationale=True, pre_prompt="", **layout_kwargs(cfg))
        g = rationale_grounder(cfg.task.startswith("ecg"), s.signal, s.meta.fs, s.meta.channels, s.meta.unit) if ground else None
        text = be.generate(ex.text, be.encode(list(ex.series)), tokens, **({"ground": g} if g else {}))
        rows.append({"record": i, "label": s.label, "reference": stated(s.rationale, cfg.task),
                     "generated": stated(text, cfg.task), "text": text, **({"filled": list(g.filled)} if g else {})})
    summary = {}
    for key in (NUMBERS if cfg.task.startswith("ecg") else HAR_RATIONALE_NUMBERS):
        pairs = [(r["reference"][key], r["generated"][key]) for r in rows if key in r["reference"] and key in r["generated"]]
        err = np.abs(np.array([g - ref for ref, g in pairs])) if pairs else np.zeros(0)
        summary[key] = {
            "stated": len(pairs),
            "of": sum(key in r["reference"] for r in rows),
            "median_abs_error": float(np.median(err)) if err.size else None,
            "mean_abs_error": float(err.mean()) if err.size else None,
            "exact": int((err == 0).sum()) if err.size else 0,
        }
    right = sum(parse_answer(r["text"], cfg.labels) == r["label"] for r in rows)  # the rationale's own answer line
    return {"artifact": artifact, "series_features": cfg.series_features, "records": len(rows), "tokens": tokens,
            "grounded": ground, "answer_right": right, "summary": summary, "rows": rows}


def markdown(res: dict) -> str:
    lines = ["# Numbers in generated rationales vs the signal", "", f"Command: `{res['command']}`", "",
             f"Machine: {res['machine'].get('cpu')}, {res['machine'].get('cores')} cores.", "",
             "| artifact | text layout | numbers | records (answer line right) | number | stated (of) | exact | median abs error | mean abs error |",
             "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for run in res["runs"]:
        for key, s in run["summary"].items():
            med = "–" if s["median_abs_error"] is None else f"{s['median_abs_error']:.4g}"
            mean = "–" if s["mean_abs_error"] is None else f"{s['mean_abs_error']:.4g}"
            how = "measured, written in" if run.get("grounded") else "the model's"
            lines.append(f"| `{run['artifact']}` | {run['series_features']} | {how} | {run['records']} ({run.get('answer_right', '–')}) | {key} | {s['stated']} ({s['of']}) "
                         f"| {s['exact']} | {med} | {mean} |")
    lines += ["", "Reference: the numbers `edge_tslm.data.rationale` measured on the same record. A rationale cut off by the "
              "token limit states fewer numbers (the `stated` column)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="append", required=True, help="compact ONNX artifact of an ECG or HAR model (repeatable)")
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=96, help="tokens generated per rationale")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ground", action="store_true", help="also generate each rationale with the measured numbers "
                    "written in (the stream's default, --ground-numbers), beside the model's own")
    ap.add_argument("--out", default=str(RESULTS / "rationale_numbers.json"))
    args = ap.parse_args(argv)
    runs = [score(a, args.per_class, args.tokens, args.threads, g) for a in args.artifact
            for g in ((False, True) if args.ground else (False,))]
    res = {"command": "python benchmarks/rationale_numbers.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": machine(), "runs": runs}
    out = Path(args.out)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
