"""The training loop: resume from out_dir/last equals training in one go; checkpoints are safetensors + JSON
only and load without torch.load; early stopping on validation loss; the schedule and the param groups."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ddp_worker  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from edge_tslm.constants import MANIFEST_FILE, WEIGHTS_FILE  # noqa: E402
from edge_tslm.train.checkpoint import STATE_FILE, TENSORS_FILE  # noqa: E402
from edge_tslm.train.loop import epoch_batches, train  # noqa: E402
from edge_tslm.train.optim import param_groups, warmup_cosine  # noqa: E402

STEPS = 6
RESUME_TOL = 1e-6  # nothing random happens in a step, so resuming is exact up to float re-association


def _train(out: Path, **changes) -> dict:
    cfg = ddp_worker.train_config(str(out), batch_size=4, steps=STEPS, **changes)
    return train(ddp_worker.build_model(), ddp_worker.make_examples(ddp_worker.N_TRAIN, 0), ddp_worker.make_examples(4, 1), cfg)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run / "last" / TENSORS_FILE)).items() if k.startswith("model.")}


def _no_torch_load(*a, **k):
    raise AssertionError("checkpoint loading must not use torch.load (pickle)")


def test_resume_from_last_equals_training_in_one_go(tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _train(whole)["step"] == STEPS

    # stop by the time limit (a limit of ~0 stops after every step): 1 step, then 1 more, then resume to the end.
    # The schedule (max_steps) stays the same, so only the resume can make a difference.
    monkeypatch.setattr(torch, "load", _no_torch_load)
    assert _train(parts, time_limit_s=1e-9)["step"] == 1
    assert _train(parts, time_limit_s=1e-9)["step"] == STEPS // 2 - 1
    assert json.loads((parts / "last" / STATE_FILE).read_text())["step"] == STEPS // 2 - 1
    assert _train(parts, time_limit_s=1e-9)["step"] == STEPS // 2
    assert _train(parts)["step"] == STEPS  # resumes at STEPS/2, crosses the epoch boundary (4 steps/epoch)

    a, b = _weights(whole), _weights(parts)
    assert set(a) == set(b) and a
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= RESUME_TOL, f"resumed adapter differs from the one-go run by {diff:.3g}"
    # the logged losses of the resumed steps are those of the one-go run
    la = [json.loads(x)["loss"] for x in (whole / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (parts / "metrics.jsonl").read_text().splitlines()]
    assert lb == pytest.approx(la, abs=1e-6)

    # a finished run resumed again trains nothing more
    assert _train(parts)["step"] == STEPS
    assert len((parts / "metrics.jsonl").read_text().splitlines()) == STEPS


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    _train(tmp_path, max_steps=2)
    for d in (tmp_path / "last", tmp_path / "best"):
        files = sorted(p.name for p in d.iterdir())
        assert files and all(f.endswith((".safetensors", ".json")) for f in files), f"{d}: {files}"
        for p in d.iterdir():
            head = p.read_bytes()[:2]
            assert head != b"\x80\x02" and not head.startswith(b"PK"), f"{p} looks like a pickle / torch zip"
    assert (tmp_path / "best" / WEIGHTS_FILE).exists() and (tmp_path / "best" / MANIFEST_FILE).exists()
    state = json.loads((tmp_path / "last" / STATE_FILE).read_text())
    assert state["step"] == 2
    tensors = load_file(str(tmp_path / "last" / TENSORS_FILE))
    assert any(k.startswith("opt.") for k in tensors) and "rng.torch" in tensors


def test_early_stopping_on_validation_loss(tmp_path):
    # lr 0 everywhere: the validation loss can never improve, so after the first evaluation every later one is
    # "bad" and the run stops after 1 + patience evaluations, long before max_steps
    res = _train(tmp_path, lr_encoder=0.0, lr_fusion=0.0, lr_tokens=0.0, eval_every=1, patience=2, max_steps=50)
    assert res["step"] == 3, res
    assert res["best_val_loss"] < float("inf")
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in recs if "val_loss" in r]
    assert len(vals) == 3 and max(vals) - min(vals) < 1e-6, vals
    best = tmp_path / "best"
    manifest = json.loads((best / MANIFEST_FILE).read_text())
    assert manifest["metrics"]["step"] == 1 and manifest["metrics"]["val_loss"] == pytest.approx(vals[0])
    assert (best / WEIGHTS_FILE).exists() and (best / "config.json").exists()
    state = json.loads((tmp_path / "last" / STATE_FILE).read_text())
    assert state["bad_evals"] == 2 and state["step"] == 3


def test_best_is_the_lowest_validation_loss(tmp_path):
    res = _train(tmp_path, eval_every=2)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["val_loss"] for r in recs if "val_loss" in r}
    assert sorted(vals) == [2, 4, 6]
    best_step = min(vals, key=vals.get)
    manifest = json.loads((tmp_path / "best" / MANIFEST_FILE).read_text())
    assert manifest["metrics"]["step"] == best_step
    assert res["best_val_loss"] == pytest.approx(vals[best_step])


def test_grouped_batches_never_mix_answer_and_rationale_targets():
    kinds = [i % 5 == 0 for i in range(103)]  # 21 rationale, 82 answer-only examples
    for epoch in range(3):
        grouped = epoch_batches(kinds, 8, 0, epoch, grouped=True)
        assert all(len(b) == 8 and len({kinds[j] for j in b}) == 1 for b in grouped)
        flat = [j for b in grouped for j in b]
        assert len(flat) == len(set(flat)) and len(grouped) == 82 // 8 + 21 // 8  # each example at most once
        assert sum(kinds[b[0]] for b in grouped) == 21 // 8  # the rationale share is kept
    assert epoch_batches(kinds, 8, 0, 0, True) != epoch_batches(kinds, 8, 0, 1, True)  # reshuffled every epoch
    # ungrouped: the historical order (a permutation by seed + epoch, cut into full batches), so old runs replay
    order = np.random.default_rng(3).permutation(103)
    assert epoch_batches(kinds, 8, 3, 0, grouped=False) == [order[k * 8 : (k + 1) * 8].tolist() for k in range(12)]
    assert epoch_batches(kinds[:3], 8, 0, 0, grouped=True) == [np.random.default_rng(0).permutation(3).tolist()]


def test_grouped_targets_warn_when_a_kind_fills_no_batch(tmp_path):
    examples = ddp_worker.make_examples(ddp_worker.N_TRAIN, 0)
    examples[0] = dataclasses.replace(examples[0], rationale=True)  # one rationale example: never a full batch of 4
    cfg = ddp_worker.train_config(str(tmp_path), batch_size=4, steps=1, group_targets=True)
    with pytest.warns(UserWarning, match="only 1 rationale examples"):
        train(ddp_worker.build_model(), examples, (), cfg)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 100) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 100) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 4, 100) == pytest.approx(0.1)
    mults = [warmup_cosine(s, 4, 100) for s in range(4, 101)]
    assert all(a >= b for a, b in zip(mults, mults[1:]))


def test_param_groups_cover_every_trainable_parameter_once():
    model = ddp_worker.build_model()
    groups = param_groups(model, 1.0, 2.0, 3.0, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    by = {g["name"]: g for g in groups}
    assert by["tokens"]["weight_decay"] == 0.0 and by["no_decay"]["weight_decay"] == 0.0
    gates = {id(p) for n, p in model.named_parameters() if n.endswith(("attn_gate", "ff_gate"))}
    assert gates and gates <= {id(p) for p in by["no_decay"]["params"]}


@pytest.mark.parametrize("isa, fast", [(["avx2"], False), (["avx2", "avx512f", "avx512_bf16"], True), (["amx_tile"], True),
                                       (None, True)])
def test_bf16_on_a_cpu_without_bf16_instructions_falls_back_to_fp32_with_a_warning(monkeypatch, isa, fast):
    import warnings

    import edge_tslm.machine as machine
    from edge_tslm.train.loop import bf16_is_fast

    monkeypatch.setattr(machine, "machine_cpu_isa", lambda: isa)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert bf16_is_fast(torch.device("cpu")) is fast
    assert any("no bf16 instructions" in str(w.message) for w in caught) is (not fast)
    assert bf16_is_fast(torch.device("meta")) is True  # only the CPU emulates it


def test_a_failed_run_leaves_activation_checkpointing_off(tmp_path):
    """An exception mid-training (here: the first step's loss) must not leave the model recomputing in every
    later forward: train() switches checkpointing off however it ends."""
    from edge_tslm.model.checkpointing import CheckpointableBlock

    model = ddp_worker.build_model()
    cfg = ddp_worker.train_config(str(tmp_path / "run"), batch_size=4, steps=2, activation_checkpointing=True)
    seen = []

    def boom(batch):
        seen.append([b.recomputes() for b in model.modules() if isinstance(b, CheckpointableBlock)])
        raise RuntimeError("out of memory (simulated)")

    model.loss = boom
    with pytest.raises(RuntimeError, match="simulated"):
        train(model, ddp_worker.make_examples(ddp_worker.N_TRAIN, 0), (), cfg)
    assert seen and all(seen[0]), "checkpointing was on during the step"
    assert not any(b.recomputes() for b in model.modules() if isinstance(b, CheckpointableBlock))
