"""Parameter counts (trainable vs frozen) of both variants on a backbone, and the adapter's size on disk.

    python benchmarks/param_counts.py [--backbone smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edge_tslm.config import TSLMConfig
from edge_tslm.constants import WEIGHTS_FILE
from edge_tslm.model import build_model, save_pretrained

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="smollm2-135m")
    a = ap.parse_args()
    rows = {}
    for variant in ("flamingo", "softprompt"):
        m = build_model(TSLMConfig(variant=variant, backbone=a.backbone))
        counts = m.parameter_counts()
        trainable = sum(c["trainable"] for c in counts.values())
        frozen = sum(c["frozen"] for c in counts.values())
        with tempfile.TemporaryDirectory() as d:
            save_pretrained(m, d)
            size = (Path(d) / WEIGHTS_FILE).stat().st_size
        rows[variant] = {"parts": counts, "trainable": trainable, "frozen": frozen, "adapter_bytes": size}
        if variant == "flamingo":
            rows[variant]["fusion_layers"] = list(m.insertion)
    OUT.mkdir(exist_ok=True)
    (OUT / "param_counts.json").write_text(json.dumps({"backbone": a.backbone, "command": "python benchmarks/param_counts.py", "variants": rows}, indent=1))
    lines = [f"Parameter counts on `{a.backbone}` (`python benchmarks/param_counts.py`)", "",
             "| variant | trainable | frozen | trainable parts | adapter file |", "|---|---:|---:|---|---:|"]
    for v, r in rows.items():
        parts = ", ".join(f"{k} {c['trainable']:,}" for k, c in r["parts"].items() if c["trainable"])
        lines.append(f"| {v} | {r['trainable']:,} | {r['frozen']:,} | {parts} | {r['adapter_bytes'] / 2**20:.1f} MiB |")
    (OUT / "param_counts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
