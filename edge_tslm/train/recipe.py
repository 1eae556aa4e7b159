"""Curriculum training: each stage starts from the previous stage's best checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_tslm.train.examples import Example, make_example
from edge_tslm.train.loop import TrainConfig, train
from edge_tslm.train.tasks import get_task


def stage_examples(
    task_name: str,
    split: str,
    data_path: str | None,
    rationale_prob: float,
    seed: int,
    limit: int = 0,
    balance: float = 0.0,
    max_seconds: float | None = None,
    features: str | None = None,
    question_first: bool | None = None,
    series_text: str | None = None,
    groups: frozenset[str] | None = None,
) -> list[Example]:
    """Answer-only examples (the classify path) mixed with rationale examples (the explanation on demand).

    balance > 0 repeats each minority class up to that fraction of the majority class's count (the
    challenge score weighs rare AF as much as normal rhythm). groups keeps only the samples of those groups (HAR:
    "subject-3", ...), e.g. the subjects a stem was not fitted on."""
    task = get_task(task_name)
    if max_seconds is not None:
        task = replace(task, max_seconds=max_seconds)
    if features is not None:
        task = replace(task, series_features=features)
    if question_first is not None:
        task = replace(task, question_first=question_first)
    if series_text is not None:
        task = replace(task, series_text=series_text)
    samples = task.load(split, data_path)
    if groups is not None:
        samples = [x for x in samples if getattr(x, "group", None) in groups]
        if not samples:
            raise ValueError(f"no {task_name} {split} sample belongs to the groups {sorted(groups)[:5]}; HAR groups are "
                             "'subject-<n>' of that split's subjects")
    n = min(len(samples), limit) if limit else len(samples)
    rng = np.random.default_rng(seed)
    idx = list(rng.permutation(len(samples))[:n] if limit else range(n))
    if balance > 0:
        by_label: dict[str, list[int]] = {}
        for i in idx:
            by_label.setdefault(_label_of(samples, i), []).append(i)
        target = int(balance * max(len(v) for v in by_label.values()))
        for members in by_label.values():
            extra = target - len(members)
            if extra > 0:
                idx += list(rng.choice(members, size=extra, replace=True))
    return [
        make_example(
            samples[i], rationale=bool(rng.random() < rationale_prob), fs=task.fs, max_seconds=task.max_seconds,
            features=task.series_features, question_first=task.question_first, series_text=task.series_text,
        )
        for i in idx
    ]


def run_curriculum(
    model,
    stages: Sequence[str],
    out_dir: str | Path,
    *,
    data_paths: dict[str, str] | None = None,
    train_cfg: TrainConfig = TrainConfig(),
    stage_steps: dict[str, int] | None = None,
    stage_time_s: dict[str, float] | None = None,
    stage_stop: dict[str, int] | None = None,
    rationale_prob: float = 0.2,
    val_limit: int = 64,
    balance: float = 0.0,
    stage_max_seconds: dict[str, float] | None = None,
    stage_layout: dict[str, dict] | None = None,
    train_groups: frozenset[str] | None = None,
) -> dict:
    """Train stage after stage; the final model carries the last task's labels and sampling rate.

    stage_max_seconds crops a stage's signals shorter than its task's default (SoftPrompt pays one LM token
    per patch, so a 60 s ECG at 150 Hz would be 2,250 soft tokens); the model's config records the crop.
    stage_layout overrides a stage's text layout (Task fields), e.g. {"har": {"question_first": True, "series_text": "short"}}
    or {"ecg_rhythm": {"series_features": ""}} (the ECG stage without its default RR text, for an ablation)."""
    out = Path(out_dir)
    results = {}
    for k, name in enumerate(stages):
        task = get_task(name)
        if name in (stage_max_seconds or {}):
            task = replace(task, max_seconds=stage_max_seconds[name])
        if name in (stage_layout or {}):
            task = replace(task, **stage_layout[name])
        path = (data_paths or {}).get(name)
        model.cfg = model.cfg.replace(
            task=task.spec.name, labels=task.spec.labels, pre_prompt=task.spec.pre_prompt, fs=task.fs, max_seconds=task.max_seconds,
            series_features=task.series_features, question_first=task.question_first, series_text=task.series_text,
            label_offsets=(),  # offsets fitted to earlier weights would bias the new ones: refit after training
            answer_end_token=model.tokenizer.convert_ids_to_tokens(model.tokenizer.eos_token_id),  # what targets end with
        )
        kw = dict(max_seconds=task.max_seconds, features=task.series_features, question_first=task.question_first,
                  series_text=task.series_text)
        tr = stage_examples(name, "train", path, rationale_prob, train_cfg.seed, balance=balance, groups=train_groups, **kw)
        va = stage_examples(name, "val", path, 0.0, train_cfg.seed, limit=val_limit, **kw)
        cfg = replace(
            train_cfg,
            out_dir=str(out / f"stage{k + 1}-{name}"),
            max_steps=(stage_steps or {}).get(name, train_cfg.max_steps),
            time_limit_s=(stage_time_s or {}).get(name, train_cfg.time_limit_s),
            stop_step=(stage_stop or {}).get(name, train_cfg.stop_step),
        )
        results[name] = train(model, tr, va, cfg, metrics_extra={"stage": name})
        best = Path(cfg.out_dir) / "best"
        model = load_adapter(model, best)
    (out / "curriculum.json").write_text(json.dumps({"stages": list(stages), "results": results}, indent=1))
    return {"model": model, "results": results}


def _label_of(samples, i: int) -> str:
    rec = getattr(samples, "records", None)  # lazy PhysioNet view: the label without reading the signal
    return rec[i].label if rec is not None else samples[i].label


def load_adapter(model, best: Path):
    """Continue from an artifact's trained weights (a stage's best, not its last step).

    A Flamingo adapter whose cross-attention blocks sit at other layers than ``model``'s has its blocks moved, in
    order, to ``model``'s layers (`remap_fusion_blocks`): fusion moved deeper starts from trained blocks."""
    import sys

    from safetensors.torch import load_file

    from edge_tslm.constants import WEIGHTS_FILE

    state = load_file(str(best / WEIGHTS_FILE))
    target, source = getattr(model, "insertion", None), fusion_layers_of(state)
    if target is not None and source and source != list(target):
        state, moved = remap_fusion_blocks(state, target)
        print(f"load_adapter: {best}'s cross-attention blocks moved to this model's layers {moved}", file=sys.stderr)
    model.load_state_dict(state, strict=False)
    return model


def load_stem(model, path: Path):
    """Load a pretrained stem (training/pretrain_ecg_stem.py or training/pretrain_minirocket_stem.py) into a model built
    with encoder.ecg_stem or encoder.minirocket_stem. Load it after any --init adapter: an adapter trained with a stem
    would otherwise put its own copy back."""
    from safetensors.torch import load_file

    from edge_tslm.model.ecg_stem import EcgStem

    stem = getattr(model.series_encoder, "stem", None) if hasattr(model, "series_encoder") else None
    if stem is None:
        raise ValueError(f"{path}: this model has no stem; build it with encoder.ecg_stem=True (--ecg-stem) or "
                         "encoder.minirocket_stem=True (--minirocket-stem)")
    state = load_file(str(path))
    want = {k: tuple(v.shape) for k, v in stem.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:  # checked before loading: a partial load_state_dict would leave a mixed stem behind
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        fix = ("pretrain it with training/pretrain_ecg_stem.py without --no-rhythm-vector and with the default "
               "--channels / --kernels / --hidden (EcgStemConfig defaults, head reading the rhythm vector)" if isinstance(stem, EcgStem)
               else "fit it with training/pretrain_minirocket_stem.py (MiniRocketConfig defaults: 3 axes, 128-sample "
                    "windows, 6 labels)")
        raise ValueError(f"{path} does not fit this model's {type(stem).__name__}: {diff[:5]} differ; {fix}")
    stem.load_state_dict(state)
    return model


def rhythm_trees_shape(directory: Path) -> tuple[int, ...]:
    """training/pretrain_rhythm_trees.py --out DIR -> its trees' (trees, nodes, depth, labels), for encoder.rhythm_trees."""
    from safetensors import safe_open

    path = Path(directory) / "trees.safetensors"
    if not path.is_file():
        raise ValueError(f"{directory} holds no trees.safetensors: fit them with python training/pretrain_rhythm_trees.py --out DIR")
    with safe_open(str(path), "np") as f:
        shape = (f.metadata() or {}).get("shape")
    if shape is None:
        raise ValueError(f"{path} records no tree shape in its metadata: write it with python training/pretrain_rhythm_trees.py")
    return tuple(json.loads(shape))


def load_rhythm_trees(model, directory: Path, cross_fit: bool = True) -> int:
    """Fill a model's encoder.rhythm_trees buffers from DIR/trees.safetensors (after any --init adapter, which would
    otherwise put its own copy back) and, while it trains, read each training record's out-of-fold log-probabilities
    from DIR/folds.safetensors -> the number of training records those cover (0 without cross_fit)."""
    from safetensors.numpy import load_file

    from edge_tslm.model.vector_cross_fit import VectorCrossFit

    from safetensors import safe_open

    from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES

    trees = getattr(getattr(model, "series_encoder", None), "trees", None)
    if trees is None:
        raise ValueError(f"{directory}: this model reads no rhythm trees; build it with encoder.rhythm_trees (--rhythm-trees)")
    path = Path(directory) / "trees.safetensors"
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    # trees fitted on another vector layout or label set would load and walk, and be silently wrong
    if "features" in meta and tuple(json.loads(meta["features"])) != tuple(RHYTHM_VECTOR_NAMES):
        raise ValueError(f"{path} was fitted on other rhythm-vector numbers than this encoder measures: refit them with "
                         "python training/pretrain_rhythm_trees.py")
    labels = getattr(model.cfg, "labels", ())
    if "labels" in meta and labels and sorted(json.loads(meta["labels"])) != sorted(labels):
        raise ValueError(f"{path} scores labels {json.loads(meta['labels'])}, this model answers {list(labels)}: fit the "
                         "trees on this task")
    trees.load_arrays(load_file(str(path)))
    if not cross_fit:
        return 0
    folds_path = Path(directory) / "folds.safetensors"
    if not folds_path.is_file():
        raise ValueError(f"{directory} holds no folds.safetensors (the training records' out-of-fold log-probabilities): "
                         "fit the trees with python training/pretrain_rhythm_trees.py --out DIR, which writes both")
    folds = load_file(str(folds_path))
    if {"vectors", "log_probs"} - set(folds):
        raise ValueError(f"{folds_path} lacks {sorted({'vectors', 'log_probs'} - set(folds))}: rewrite it with python "
                         "training/pretrain_rhythm_trees.py --out DIR")
    trees.cross_fit = VectorCrossFit(folds["vectors"], folds["log_probs"])
    return len(trees.cross_fit.table)


def load_ecg_stem_folds(model, path: Path) -> int:
    """training/pretrain_ecg_stem.py --cross-fit's folds.safetensors -> each training record's out-of-fold stem
    features, read by the model's ECG stem while it trains (never saved) -> the number of records they cover."""
    from safetensors.numpy import load_file

    from edge_tslm.model.ecg_stem import EcgStem
    from edge_tslm.model.vector_cross_fit import VectorCrossFit

    stem = getattr(getattr(model, "series_encoder", None), "stem", None)
    if not isinstance(stem, EcgStem):
        raise ValueError(f"{path}: out-of-fold ECG stem features, but this model has no ECG stem (--ecg-stem)")
    folds = load_file(str(path))
    if "features" not in folds or folds["features"].shape[1] != stem.cfg.feature_dim:
        raise ValueError(f"{path} is not an ECG stem's folds file for this stem ({stem.cfg.feature_dim} features a record): "
                         "make it with python training/pretrain_ecg_stem.py --cross-fit K and the stem's own flags")
    stem.cross_fit = VectorCrossFit(folds["vectors"], folds["features"])
    return len(stem.cross_fit.table)


def load_cross_fit(path: Path, task: str, data: str | None = None):
    """folds.safetensors -> CrossFitHeads over the training windows of `task` (the har / har_gait windows the TSLM
    trains on, as the encoder receives them)."""
    from safetensors import safe_open

    from edge_tslm.data.hapt import hapt_windows
    from edge_tslm.model.minirocket_stem import CrossFitHeads, window_key

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        w, b = f.get_tensor("weight"), f.get_tensor("bias")
    if meta.get("task") != task:
        raise ValueError(f"{path} was fitted for task {meta.get('task')!r}, not {task!r}: refit with --task {task}")
    fold_of = json.loads(meta["folds"])
    if task not in ("har", "har_gait"):
        raise ValueError(f"--stem-folds: a MiniRocket stem's folds are for HAR stages (har, har_gait), not {task!r}")
    table = {window_key(s.signal): fold_of[s.group] for s in hapt_windows("train", data, gait=task == "har_gait")
             if s.group in fold_of}
    return CrossFitHeads(w, b, table)


def train_only(model, prefixes: Sequence[str]) -> int:
    """Freeze every trainable weight whose name does not start with one of `prefixes` (e.g. only a new stem's
    projection trains, and the rest of a loaded adapter stays as it is) -> the number of weights left trainable."""
    keep = tuple(prefixes)
    names = {n for n, p in model.named_parameters() if p.requires_grad and keep and n.startswith(keep)}
    if not names:
        trainable = sorted({n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and "." in n})
        raise ValueError(f"no trainable weight starts with {list(prefixes)}; trainable parts start with {trainable[:8]}")
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fusion_layers_of(state: dict) -> list[int]:
    """The decoder layers an adapter's cross-attention blocks (``xattn.<layer>.*``) sit at."""
    return sorted({int(k.split(".")[1]) for k in state if k.startswith("xattn.")})


def remap_fusion_blocks(state: dict, target: Sequence[int]) -> tuple[dict, dict[int, int]]:
    """-> (state with the i-th block's weights under the i-th target layer, {source layer: target layer}).

    Blocks beyond the shorter list are left out: a source block without a target is dropped, a target block without a
    source keeps its initialisation (its gates start closed). Other weights pass through unchanged."""
    source = fusion_layers_of(state)
    moved = dict(zip(source, sorted(target)))
    out = {}
    for k, v in state.items():
        if not k.startswith("xattn."):
            out[k] = v
            continue
        _, layer, rest = k.split(".", 2)
        if int(layer) in moved:
            out[f"xattn.{moved[int(layer)]}.{rest}"] = v
    return out, moved
