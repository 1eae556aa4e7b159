"""Out-of-fold outputs of a frozen ECG stem for the training records, looked up by each record's rhythm vector.

Why: a stem fitted on the training records is nearly always right on them, so a TSLM trained on its in-sample
outputs learns to trust it more than it deserves on new records. While the TSLM trains, each training record's stem
output comes instead from a copy of the stem fitted without that record's fold (training/pretrain_rhythm_trees.py,
training/pretrain_ecg_stem.py --cross-fit). The encoder measures the rhythm vector of every series anyway, and no two
records share one, so the vector is the key and nothing in the batch has to carry the record's name.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["VectorCrossFit", "vector_key"]


def vector_key(v: np.ndarray) -> bytes:
    """A record's key: its rhythm vector rounded to 4 decimals (nan kept), so the vector the pretraining measured and
    the one the encoder measures from the same samples match."""
    return np.round(np.asarray(v, np.float64), 4).astype(np.float32).tobytes()


class VectorCrossFit:
    """(N, F) training records' rhythm vectors -> their (N, D) out-of-fold stem outputs."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray):
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} rhythm vectors but {len(rows)} out-of-fold rows: the folds file is damaged")
        self.table = {vector_key(k): torch.as_tensor(r, dtype=torch.float32) for k, r in zip(keys, rows)}
        self.seen, self.hits = 0, 0  # rows looked up while training, and how many were training records

    def replace(self, vectors: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(K, F) vectors, (K, D) stem outputs -> (K, D) with the training records' rows out of fold."""
        v = vectors.detach().float().cpu().numpy()
        out = out.clone()
        for i in range(len(v)):
            own = self.table.get(vector_key(v[i]))
            if own is not None:
                if own.numel() != out.shape[-1]:
                    raise ValueError(f"out-of-fold rows have {own.numel()} numbers, the stem gives {out.shape[-1]}: "
                                     "refit the folds for this stem")
                out[i] = own.to(out)
                self.hits += 1
        self.seen += len(v)
        return out
