"""A restricted unpickler for third-party data files: numpy arrays and plain containers only.

Pickles from outside can run any code on load. This unpickler resolves only numpy's array
reconstruction, a latin-1 `bytes` helper (Python 2 pickles encode raw bytes that way) and
`slice`/`object`. Pandas objects inside old pickles (DataFrame, BlockManager, Index) are
NOT built by pandas: they become inert `Opaque` records holding their pickled state, from
which the caller reads the numpy arrays. Every other global is refused.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # numpy 1.26
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer as _np_frombuffer  # type: ignore[no-redef]


class Opaque:
    """Inert stand-in for a pandas object: keeps the class name and the pickled state."""

    kind = "object"

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Opaque({self.kind})"


_PANDAS_NAMES = ("DataFrame", "Series", "BlockManager", "SingleBlockManager", "Index", "RangeIndex", "Int64Index")
_OPAQUE: dict[str, type[Opaque]] = {n: type(n, (Opaque,), {"kind": n}) for n in _PANDAS_NAMES}


def _new_index(cls: type, state: dict) -> Opaque:
    """Stand-in for pandas' `_new_Index(cls, d)`: an Opaque holding `d`."""
    if not (isinstance(cls, type) and issubclass(cls, Opaque)):
        raise pickle.UnpicklingError("_new_Index called with a class that is not an admitted stand-in")
    obj = cls()
    obj.state = state
    return obj


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    """Safe `copy_reg._reconstructor`: only builds Opaque stand-ins on top of `object`."""
    if not (isinstance(cls, type) and issubclass(cls, Opaque)) or base is not object:
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} on {base!r}")
    obj = cls()
    if state is not None:
        obj.state = state
    return obj


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Safe `_codecs.encode`: only the str→bytes form Python 2 pickles use."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode admitted only as encode(str, 'latin1')")
    return codecs.encode(text, "latin1")


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _np_reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _np_scalar for m in _NUMPY_MODULES},
    **{(m, "_frombuffer"): _np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits numpy arrays, containers and inert pandas stand-ins only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.startswith("pandas.") and name == "_new_Index":
            return _new_index
        if module.startswith("pandas.") and name in _OPAQUE:
            return _OPAQUE[name]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are admitted")


def restricted_loads(data: bytes) -> Any:
    """Unpickle bytes with `RestrictedUnpickler` (latin-1 for Python 2 strings)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def restricted_load(path: str | Path) -> Any:
    """Unpickle a file (gzip-compressed if it ends in .gz) with `RestrictedUnpickler`."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return RestrictedUnpickler(fh, encoding="latin1").load()


def dataframe_columns(frame: Opaque) -> dict[str, np.ndarray]:
    """Columns of a pickled pandas DataFrame stand-in, as {name: 1-D array}.

    Reads the BlockManager state (axes, block values, block locations) that pandas
    writes; works for the pre-1.0 layout found in old pickles.
    """
    if not isinstance(frame, Opaque) or frame.kind != "DataFrame":
        raise ValueError(f"expected a DataFrame stand-in, got {frame!r}")
    state = frame.state
    manager = state["_data"] if isinstance(state, dict) else state
    mstate = manager.state
    # pandas >= 0.14 layout: (axes, block values, block items, {"0.14.1": {"axes", "blocks"}})
    extra = mstate[3] if isinstance(mstate, tuple) and len(mstate) == 4 else None
    if isinstance(extra, dict) and "0.14.1" in extra:
        axes = extra["0.14.1"]["axes"]
        names = list(axes[0].state["data"])
        columns: dict[str, np.ndarray] = {}
        for block in extra["0.14.1"]["blocks"]:
            values = np.asarray(block["values"])
            locs = block["mgr_locs"]
            idx = range(len(names))[locs] if isinstance(locs, slice) else list(np.asarray(locs))
            for row, col in enumerate(idx):
                columns[str(names[col])] = values[row]
        return columns
    raise ValueError("unrecognised pickled DataFrame layout")
