"""A stage's resumable checkpoint (`last/`) as an artifact, to evaluate or export a checkpoint other than the best.

    python training/checkpoint_to_artifact.py runs/flamingo-har-mr/stage1-har/last \
        --like runs/flamingo-har-mr/stage1-har/best --out runs/flamingo-har-mr-last
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_tslm.train.checkpoint import checkpoint_to_artifact  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a checkpoint directory (trainer_state.json + trainer_tensors.safetensors)")
    ap.add_argument("--like", type=Path, required=True, help="the same run's best/ artifact (config and backbone)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    print(checkpoint_to_artifact(a.checkpoint, a.like, a.out))


if __name__ == "__main__":
    main()
