"""Average the adapters of several runs of one recipe into one artifact (a "model soup").

    python training/soup.py runs/flamingo-har-gait-cfd-export runs/flamingo-har-gait-cfd-s22-export \
        runs/flamingo-har-gait-cfd-s23-export --out runs/har-gait-soup3

Choose which runs go in on validation (`benchmarks/eval_tslm.py --split val`), as for any checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_tslm.train.soup import soup_artifacts  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", type=Path, nargs="+", help="torch artifacts (config.json + adapter.safetensors)")
    ap.add_argument("--weights", type=float, nargs="+", help="one weight per artifact (default: equal)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    print(soup_artifacts(a.artifacts, a.out, a.weights))


if __name__ == "__main__":
    main()
