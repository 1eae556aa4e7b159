"""Full-precision curriculum training of one variant: synthetic TSQA -> HAR (-> ECG rhythm).

    python training/curriculum.py --variant flamingo --stages tsqa,har --out runs/flamingo-har

Each stage starts from the previous stage's best checkpoint; the final best artifact is copied to
--export (e.g. models/flamingo-har) and scored on the test split (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from edge_tslm.config import EncoderConfig, TSLMConfig, parse_fusion_layers
from edge_tslm.model import build_model
from edge_tslm.train.loop import TrainConfig
from edge_tslm.train.recipe import run_curriculum


def stage_layouts(ap: argparse.ArgumentParser, a: argparse.Namespace) -> dict[str, dict]:
    """--series-features / --question-first / --series-text -> run_curriculum's stage_layout, checked up front: a
    typo in a stage name or a value would otherwise train with the default layout, or fail after minutes of loading."""
    from edge_tslm.prompts import SERIES_FEATURES, SERIES_TEXTS

    def pairs(flag: str, text: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
        out = []
        for p in filter(None, text.split(",")):
            if "=" not in p:
                ap.error(f"{flag} takes stage=value pairs, e.g. {flag} har={allowed[-1]}; got {p!r}")
            stage, value = p.split("=", 1)
            if value not in allowed:
                ap.error(f"{flag} {p!r}: {value!r} is not one of {allowed}")
            out.append((stage, value))
        return out

    layout: dict[str, dict] = {}
    for stage, value in pairs("--series-features", a.series_features, SERIES_FEATURES):
        layout.setdefault(stage, {})["series_features"] = value
    for stage in filter(None, a.question_first.split(",")):
        layout.setdefault(stage, {})["question_first"] = True
    for stage, value in pairs("--series-text", a.series_text, SERIES_TEXTS):
        layout.setdefault(stage, {})["series_text"] = value
    stray = sorted(set(layout) - set(a.stages.split(",")))
    if stray:
        ap.error(f"--series-features/--question-first/--series-text name stages not in --stages {a.stages!r}: {stray}")
    return layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="flamingo", choices=["flamingo", "softprompt"])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--stages", default="tsqa,har")
    ap.add_argument("--out", required=True)
    ap.add_argument("--export", default="")
    ap.add_argument("--steps", default="", help="per stage, e.g. tsqa=150,har=2000")
    ap.add_argument("--minutes", default="", help="time limit per stage, e.g. tsqa=10,har=55")
    ap.add_argument("--stop", default="", help="stop after this step per stage, schedule unchanged, e.g. har=704")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--rationale-prob", type=float, default=0.2)
    ap.add_argument("--group-targets", action="store_true",
                    help="batches of answer-only or of rationale examples, never mixed (the classify path's loss is not drowned by "
                    "the rationales' tokens, and answer-only batches are not padded to a rationale's length)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="recompute activations in the backward (LM layers, encoder blocks): less memory, ~1 more forward")
    ap.add_argument("--balance", type=float, default=0.0, help="oversample minority classes to this fraction of the majority")
    ap.add_argument("--freeze-token-rows", action="store_true", help="keep <ts>/<endofchunk> rows fixed (backward stops at the first fusion layer)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default="", help="start from this artifact's adapter (e.g. the previous curriculum stage's best)")
    ap.add_argument("--max-seconds", default="", help="crop a stage's signals, e.g. ecg_rhythm=15 (SoftPrompt: one LM token per patch)")
    ap.add_argument("--series-features", default="",
                    help="override a stage's measured description text, e.g. ecg_rhythm= (none), ecg_rhythm=rr (the default: rate and RR), "
                    "ecg_rhythm=beats (plus beat shape) or ecg_rhythm=rr_series (the RR intervals as a second series, no numbers)")
    ap.add_argument("--question-first", default="", help="stages whose question goes before the series, e.g. har")
    ap.add_argument("--series-text", default="", help="per stage, how each series is described: full | short | none, e.g. har=short "
                    "(none needs --scale-token)")
    ap.add_argument("--scale-token", action="store_true",
                    help="Flamingo: the encoder reads each series' mean and std as a vector (an embedding added to its patches) instead of the text")
    ap.add_argument("--ecg-stem", default="",
                    help="a pretrained ECG stem (training/pretrain_ecg_stem.py's stem.safetensors): the encoder reads its "
                    "features through a zero-initialised projection; the stem itself stays frozen. Needs --rhythm-vector")
    ap.add_argument("--rhythm-trees", default="",
                    help="ECG, with --rhythm-vector: training/pretrain_rhythm_trees.py's --out DIR; boosted trees over the "
                    "rhythm vector (frozen, in the encoder graph), whose label log-probabilities the encoder reads through a "
                    "zero-initialised projection; while training, each training record's come from trees fitted without it")
    ap.add_argument("--stem-folds", default="",
                    help="with --minirocket-stem: training/pretrain_minirocket_stem.py --cross-fit's folds.safetensors; "
                    "while training, each training window's stem scores come from a head fitted without its subject "
                    "(out-of-fold, as on a new wearer); the saved adapter and every evaluation keep the full head. "
                    "With --ecg-stem: training/pretrain_ecg_stem.py --cross-fit's folds.safetensors (each training "
                    "record's stem features from a stem trained without its fold)")
    ap.add_argument("--minirocket-stem", default="",
                    help="HAR: a fitted MiniRocket + ridge stem (training/pretrain_minirocket_stem.py's stem.safetensors) "
                    "over each window's three axes; the encoder reads its scores, the stem stays frozen. Needs --scale-token")
    ap.add_argument("--stem-logits-only", action="store_true",
                    help="with --ecg-stem: the encoder reads only the stem's label logits, not its hidden layer (the "
                    "logits of --stem-folds' fold stems mean what the stem's do; their hidden units are other units)")
    ap.add_argument("--stem-latents", action="store_true",
                    help="with a stem: its embedding is also added to every resampler latent (a second zero-initialised "
                    "projection), so the fusion blocks read it directly, past --encoder-dropout and the resampler")
    ap.add_argument("--encoder-dropout", type=float, default=0.0,
                    help="dropout on the encoder's patch embeddings while training (before the scale, vector and stem "
                    "embeddings are added, so those stay whole: a model then leans on them more)")
    ap.add_argument("--augment-rotate", type=float, default=0.0, metavar="DEG",
                    help="with --minirocket-stem: while training, the patch path reads each window turned by up to DEG "
                    "degrees about a random axis (the stem reads it as recorded)")
    ap.add_argument("--augment-warp", type=float, default=0.0, metavar="FRAC",
                    help="with --minirocket-stem: while training, the patch path reads each window replayed up to FRAC "
                    "faster or slower (e.g. 0.1)")
    ap.add_argument("--train-groups", default="",
                    help="train only on these groups of the train split, e.g. HAR subjects subject-3,subject-7 (the ones "
                    "a stem was not fitted on: pretrain_minirocket_stem.py --fit-groups)")
    ap.add_argument("--train-only", default="",
                    help="train only the adapter weights under these name prefixes, e.g. series_encoder.stem_embed. (the "
                    "stem's projection: the rest of a loaded adapter stays as it is)")
    ap.add_argument("--rhythm-vector", action="store_true",
                    help="Flamingo, ECG stages only: the encoder also reads each lead's measured rhythm and beat shape as a "
                    "vector (edge_tslm/rhythm_vector.py: 36 numbers), beside the text")
    ap.add_argument("--fusion-layers", default="", help="Flamingo: decoder layers that get a cross-attention block, e.g. 25,27,29 "
                    "(default: every 5th from the middle); a stream pays per window for every layer from the first one on")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="cpu | cuda | mps | auto (CUDA, then MPS, then CPU)")
    ap.add_argument("--epochs", type=float, default=1.0, help="cosine schedule length in epochs when --steps does not fix it")
    ap.add_argument("--patience", type=int, default=4, help="evaluations without a better validation loss before stopping")
    ap.add_argument("--val-limit", type=int, default=64, help="validation examples per stage (early stopping's loss)")
    ap.add_argument("--data", action="append", default=[], help="task=path, e.g. ecg_rhythm=../shared/data/physionet2017")
    a = ap.parse_args()
    layout = stage_layouts(ap, a)

    torch.manual_seed(a.seed)
    if not 0.0 <= a.encoder_dropout < 1.0:
        ap.error(f"--encoder-dropout must be in [0, 1), got {a.encoder_dropout}")
    if (a.augment_rotate or a.augment_warp) and not a.minirocket_stem:
        ap.error("--augment-rotate / --augment-warp change whole 3-axis windows for the patch path: pass --minirocket-stem too")
    if not 0.0 <= a.augment_rotate <= 180.0 or not 0.0 <= a.augment_warp < 0.5:
        ap.error(f"--augment-rotate must be in [0, 180] and --augment-warp in [0, 0.5), got {a.augment_rotate} and {a.augment_warp}")
    if a.stem_latents and not (a.ecg_stem or a.minirocket_stem):
        ap.error("--stem-latents adds a stem's embedding to the latents: pass --ecg-stem or --minirocket-stem too")
    if a.stem_logits_only and not a.ecg_stem:
        ap.error("--stem-logits-only picks what the encoder reads of the ECG stem: pass --ecg-stem too")
    if a.scale_token and a.variant != "flamingo":
        ap.error("--scale-token is a Flamingo encoder option")
    if a.ecg_stem and not a.rhythm_vector:
        ap.error("--ecg-stem's head reads the rhythm vector: pass --rhythm-vector too")
    if a.ecg_stem and not Path(a.ecg_stem).is_file():
        ap.error(f"--ecg-stem {a.ecg_stem} is not a file; train one with python training/pretrain_ecg_stem.py --out DIR "
                 "and pass DIR/stem.safetensors")
    if a.rhythm_trees and not a.rhythm_vector:
        ap.error("--rhythm-trees read the rhythm vector: pass --rhythm-vector too")
    trees_shape = ()
    if a.rhythm_trees:
        from edge_tslm.train.recipe import rhythm_trees_shape

        try:
            trees_shape = rhythm_trees_shape(Path(a.rhythm_trees))
        except ValueError as e:
            ap.error(f"--rhythm-trees: {e}")
    if a.minirocket_stem and not (a.scale_token and a.variant == "flamingo"):
        ap.error("--minirocket-stem reads each window as recorded: a Flamingo model with --scale-token")
    if a.minirocket_stem and not Path(a.minirocket_stem).is_file():
        ap.error(f"--minirocket-stem {a.minirocket_stem} is not a file; fit one with python training/pretrain_minirocket_stem.py "
                 "--out DIR and pass DIR/stem.safetensors")
    if a.rhythm_vector and a.variant != "flamingo":
        ap.error("--rhythm-vector is a Flamingo encoder option")
    if a.rhythm_vector and any(s.startswith("har") or s.startswith("tsqa") for s in a.stages.split(",")):
        ap.error(f"--rhythm-vector measures each series as an ECG lead; stages {a.stages!r} include a non-ECG task: train "
                 "that stage first, then continue the ECG stage with --init and --rhythm-vector")
    if any(v.get("series_text") == "none" for v in layout.values()) and not a.scale_token:  # caught here, not after minutes of loading
        ap.error('--series-text STAGE=none leaves the mean and std out of the text: add --scale-token so the encoder reads them')
    try:
        fusion_layers = parse_fusion_layers(a.fusion_layers)
    except ValueError as e:
        ap.error(f"--fusion-layers: {e}")
    if fusion_layers and a.variant != "flamingo":
        ap.error("--fusion-layers places Flamingo's cross-attention blocks; SoftPrompt has none")
    cfg = TSLMConfig(variant=a.variant, backbone=a.backbone, train_token_rows=not a.freeze_token_rows,
                     encoder=EncoderConfig(dropout=a.encoder_dropout, scale_token=a.scale_token, rhythm_vector=a.rhythm_vector, ecg_stem=bool(a.ecg_stem),
                                             minirocket_stem=bool(a.minirocket_stem), stem_at_latents=a.stem_latents,
                                             stem_logits_only=a.stem_logits_only, augment_rotate_deg=a.augment_rotate, augment_warp=a.augment_warp,
                                             rhythm_trees=trees_shape))
    if fusion_layers:
        cfg = cfg.replace(fusion=replace(cfg.fusion, layers=fusion_layers))
    model = build_model(cfg)
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    model.to(device)
    if a.init:
        from edge_tslm.train.recipe import load_adapter

        load_adapter(model, Path(a.init))
    if a.ecg_stem or a.minirocket_stem:
        from edge_tslm.train.recipe import load_stem

        load_stem(model, Path(a.ecg_stem or a.minirocket_stem))
    if a.rhythm_trees:
        from edge_tslm.train.recipe import load_rhythm_trees

        print(f"rhythm trees {trees_shape}: out-of-fold log-probabilities for {load_rhythm_trees(model, Path(a.rhythm_trees)):,} training records")
    if a.stem_folds and a.ecg_stem:
        from edge_tslm.train.recipe import load_ecg_stem_folds

        print(f"ECG stem features out of fold for {load_ecg_stem_folds(model, Path(a.stem_folds)):,} training records")
    elif a.stem_folds:
        from edge_tslm.train.recipe import load_cross_fit

        if not a.minirocket_stem:
            ap.error("--stem-folds holds a stem's out-of-fold outputs: pass --minirocket-stem or --ecg-stem too")
        final = a.stages.split(",")[-1]
        model.series_encoder.stem.cross_fit = load_cross_fit(Path(a.stem_folds), final, dict(p.split("=", 1) for p in a.data).get(final))
        print(f"stem scores out of fold for {len(model.series_encoder.stem.cross_fit.table):,} {final} training windows")
    if a.train_only:
        from edge_tslm.train.recipe import train_only

        try:
            n = train_only(model, [p for p in a.train_only.split(",") if p])
        except ValueError as e:
            ap.error(f"--train-only: {e}")
        print(f"training only {n:,} weights ({a.train_only})")
    kv = lambda s: {k: float(v) for k, v in (p.split("=") for p in s.split(",") if p)}  # noqa: E731
    res = run_curriculum(
        model,
        a.stages.split(","),
        a.out,
        data_paths=dict(p.split("=", 1) for p in a.data),
        train_cfg=TrainConfig(batch_size=a.batch_size, eval_every=a.eval_every, bf16=a.bf16, seed=a.seed, epochs=a.epochs,
                              patience=a.patience, activation_checkpointing=a.activation_checkpointing,
                              group_targets=a.group_targets),
        stage_steps={k: int(v) for k, v in kv(a.steps).items()},
        stage_time_s={k: v * 60 for k, v in kv(a.minutes).items()},
        stage_stop={k: int(v) for k, v in kv(a.stop).items()},
        rationale_prob=a.rationale_prob,
        balance=a.balance,
        stage_max_seconds=kv(a.max_seconds),
        stage_layout=layout,
        train_groups=frozenset(g for g in a.train_groups.split(",") if g) or None,
        val_limit=a.val_limit,
    )
    if a.stem_folds:
        cf = model.series_encoder.stem.cross_fit
        print(f"out-of-fold stem outputs: {cf.hits:,} of {cf.seen:,} series seen while training")
    if a.rhythm_trees:
        tf = model.series_encoder.trees.cross_fit
        print(f"out-of-fold tree log-probabilities: {tf.hits:,} of {tf.seen:,} series seen while training")
    last = Path(a.out) / f"stage{len(a.stages.split(','))}-{a.stages.split(',')[-1]}" / "best"
    if a.export:
        shutil.copytree(last, a.export, dirs_exist_ok=True)
    print(json.dumps(res["results"], indent=1))


if __name__ == "__main__":
    main()
