"""training/curriculum.py's layout flags are parsed and checked before any model is built."""

import argparse
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
_spec = importlib.util.spec_from_file_location("curriculum", Path(__file__).resolve().parents[1] / "training" / "curriculum.py")
curriculum = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(curriculum)


def _layout(stages: str, features: str = "", question_first: str = "", series_text: str = "") -> dict:
    a = argparse.Namespace(stages=stages, series_features=features, question_first=question_first, series_text=series_text)
    return curriculum.stage_layouts(argparse.ArgumentParser(prog="curriculum.py"), a)


def test_flags_become_one_layout_per_stage():
    assert _layout("tsqa,har", question_first="har", series_text="har=short") == {
        "har": {"question_first": True, "series_text": "short"}}
    assert _layout("ecg_rhythm", features="ecg_rhythm=") == {"ecg_rhythm": {"series_features": ""}}  # the ablation


@pytest.mark.parametrize("kw, message", [
    (dict(series_text="har"), "stage=value"),
    (dict(series_text="har=tiny"), "is not one of"),
    (dict(features="har=qt"), "is not one of"),
    (dict(question_first="hr"), "not in --stages"),
])
def test_bad_flags_are_refused_with_the_reason(kw, message, capsys):
    with pytest.raises(SystemExit):
        _layout("har", **kw)
    assert message in capsys.readouterr().err
