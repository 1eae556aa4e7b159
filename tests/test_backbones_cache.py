"""The backbone cache's publish step when several processes convert the same backbone at once."""

import pytest

from edge_tslm.backbones import publish_dir


def test_first_finished_copy_wins_and_the_others_are_dropped(tmp_path):
    out = tmp_path / "smollm2-135m"
    first, second = tmp_path / ".a.tmp", tmp_path / ".b.tmp"
    for d in (first, second):
        d.mkdir()
        (d / "source.json").write_text("{}")
        (d / "weights").write_text(d.name)
    assert publish_dir(first, out) == out and (out / "weights").read_text() == ".a.tmp"
    assert publish_dir(second, out) == out  # the race the concurrent training runs met: no error
    assert not second.exists() and (out / "weights").read_text() == ".a.tmp"


def test_a_half_written_target_is_not_taken_for_a_finished_one(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "partial").write_text("x")  # no source.json: not a finished conversion
    tmp = tmp_path / ".m.tmp"
    tmp.mkdir()
    (tmp / "source.json").write_text("{}")
    with pytest.raises(OSError):
        publish_dir(tmp, out)
