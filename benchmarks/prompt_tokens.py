"""How many prompt tokens each text layout makes a stream pay for every window.

    python benchmarks/prompt_tokens.py     # writes benchmarks/results/prompt_tokens.json and .md

For each layout, the prompt ids the ONNX runtime feeds (`runtime.tokenizer.PromptTokenizer` on the model's own
tokenizer, as `edge-tslm export` saves it; chat template and system pre-prompt included) are built for real test
windows. The head all windows share is what the runtime caches (`OnnxBackend._cached_prefix`); the rest is paid per
window, at ~1.6 ms a token on one core of this CPU (`benchmarks/results/stream_latency.md`). Every token from the first `<ts>` on is paid per window, even where the text
is the same each time (`series_text="none"`): the series reach it through the cross-attention.
HAR: the first 200 HAPT test windows. ECG: the first 30 s of the first 100 PhysioNet 2017 test records.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_tslm.constants import TS_TOKEN
from edge_tslm.machine import machine
from edge_tslm.model.artifact import from_pretrained, read_config
from edge_tslm.results import write_results
from edge_tslm.runtime.tokenizer import PromptTokenizer
from edge_tslm.signals import TSInput
from edge_tslm.train.examples import example_from_input, layout_kwargs

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = Path(__file__).resolve().parents[1] / "models"
# (task, layout name, the model whose config and tokenizer give the layout, config changes)
LAYOUTS = (
    ("har", "full text, question last (models/flamingo-har)", "flamingo-har", {}),
    ("har", "full text, question first", "flamingo-har", {"question_first": True}),
    ("har", "short text, question first (models/flamingo-har-short)", "flamingo-har-short", {}),
    ("har", "no numbers (scale embedding), question first", "flamingo-har-short",
     {"series_text": "none", "encoder": {"scale_token": True}}),
    ("ecg_rhythm", "no measured text, question last (models/flamingo-ecg)", "flamingo-ecg", {}),
    ("ecg_rhythm", "rr text, question first (models/flamingo-ecg-rr)", "flamingo-ecg-rr", {}),
    ("ecg_rhythm", "beats text, question first", "flamingo-ecg-rr", {"series_features": "beats"}),
    ("ecg_rhythm", "no numbers (scale embedding + rhythm vector), question first", "flamingo-ecg-rr",
     {"series_features": "", "series_text": "none", "encoder": {"scale_token": True, "rhythm_vector": True}}),
)


def _inputs(task: str) -> list[TSInput]:
    if task == "har":
        from edge_tslm.data.hapt import hapt_windows

        samples = list(hapt_windows("test"))[:200]
        return [TSInput(s.signal, s.meta, s.prompt) for s in samples]
    from edge_tslm.data import physionet2017 as p17

    out = []
    for rec in p17.split_records("test")[:100]:
        s = rec.sample()
        out.append(TSInput(s.signal[:, : int(30 * s.meta.fs)], s.meta, s.prompt))
    return out


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    return next((i for i in range(n) if any(s[i] != first[i] for s in seqs)), n)


def main() -> dict:
    tokenizers: dict[str, PromptTokenizer] = {}
    inputs: dict[str, list[TSInput]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, name, model_name, changes in LAYOUTS:
            if model_name not in tokenizers:  # the model's tokenizer (with <ts>/<endofchunk>), saved as an export does
                d = os.path.join(tmp, model_name)
                from_pretrained(MODELS / model_name).tokenizer.save_pretrained(d)
                tokenizers[model_name] = PromptTokenizer(d)
            cfg = read_config(MODELS / model_name)
            cfg = replace(cfg, **{k: replace(getattr(cfg, k), **v) if isinstance(v, dict) else v for k, v in changes.items()})
            inputs.setdefault(task, _inputs(task))
            tok = tokenizers[model_name]
            ids = [tok.prompt_ids(example_from_input(x, **layout_kwargs(cfg)).text, chat_format=cfg.chat_format,
                                  system=cfg.pre_prompt) for x in inputs[task]]
            # the runtime caches the shared head up to the first <ts> at most: the media reach every token after it
            ts_id = tok.token_id(TS_TOKEN)
            head = min(_common_prefix(ids), min(i.index(ts_id) for i in ids))
            per_window = np.array([len(i) - head for i in ids])
            rows.append({"task": task, "layout": name, "model": f"models/{model_name}", "changes": changes,
                         "windows": len(ids), "prompt_tokens_mean": round(float(np.mean([len(i) for i in ids])), 1),
                         "shared_head": head, "per_window_mean": round(float(per_window.mean()), 1),
                         "per_window_min_max": [int(per_window.min()), int(per_window.max())]})
            print(rows[-1], file=sys.stderr)
    result = {"rows": rows, "machine": machine(), "command": "python benchmarks/prompt_tokens.py " + shlex.join(sys.argv[1:])}
    print(write_results(RESULTS / "prompt_tokens.json", result, markdown))
    return result


def markdown(res: dict) -> str:
    """The table of prompt_tokens.md."""
    lines = ["# Prompt tokens a stream pays for per window", "", f"`{res['command'].strip()}`: the runtime's prompt ids "
             "(chat template and pre-prompt included) for real test windows; the shared head is cached, the rest is "
             "prefilled every window.", "",
             "| task | layout | windows | prompt tokens (mean) | shared head (cached) | per window (mean) | per window min–max |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['task']} | {r['layout']} | {r['windows']} | {r['prompt_tokens_mean']} | {r['shared_head']} | "
                     f"**{r['per_window_mean']}** | {r['per_window_min_max'][0]}–{r['per_window_min_max'][1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
