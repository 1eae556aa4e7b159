"""edge-tslm train: curriculum training of one variant on one backbone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def train(
    out: Annotated[Path, typer.Option(help="run directory (checkpoints, metrics.jsonl)")],
    task: Annotated[str, typer.Option(help="final task: har | har_gait (windows in the wearer's gait frame) | ecg_rhythm | synthetic_ecg | tsqa")] = "har",
    variant: Annotated[str, typer.Option(help="flamingo | softprompt")] = "flamingo",
    backbone: Annotated[str, typer.Option(help="smollm2-135m, gemma3-270m, a HF id or a local path")] = "smollm2-135m",
    stages: Annotated[Optional[str], typer.Option(help="comma-separated curriculum; default tsqa,<task>")] = None,
    data: Annotated[Optional[Path], typer.Option(help="data folder for the final task (PhysioNet 2017 / UCI HAR layout)")] = None,
    steps: Annotated[int, typer.Option(help="max steps per stage (0: one epoch)")] = 0,
    minutes: Annotated[float, typer.Option(help="time limit per stage (0: none)")] = 0.0,
    batch_size: Annotated[int, typer.Option()] = 8,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (fp32 master weights)")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    activation_checkpointing: Annotated[bool, typer.Option(
        help="recompute activations in the backward: training memory barely grows with text or series length, ~1 more forward")] = False,
    series_features: Annotated[Optional[str], typer.Option(
        help="measured numbers for the final task: '' (none), rr or beats (in the text), rr_series (the RR intervals as a "
        "second series, no numbers in the text); default: the task's (ecg_rhythm: rr)")] = None,
    series_text: Annotated[Optional[str], typer.Option(
        help="how the final task describes each series: full, short or none (none needs --scale-token)")] = None,
    question_first: Annotated[bool, typer.Option(
        help="the final task's question before the series (a stream then caches it with the prompt head)")] = False,
    scale_token: Annotated[bool, typer.Option(
        help="Flamingo: the encoder reads each series' mean and std as a vector instead of from the text")] = False,
    rhythm_vector: Annotated[bool, typer.Option(
        help="Flamingo, ECG task only: the encoder also reads each lead's measured rhythm and beat shape as a vector "
             "(edge_tslm/rhythm_vector.py), beside the text")] = False,
    ecg_stem: Annotated[Optional[Path], typer.Option(
        help="Flamingo, ECG task only, with --rhythm-vector: a pretrained ECG stem (training/pretrain_ecg_stem.py's "
             "stem.safetensors) whose features the encoder reads; the stem stays frozen")] = None,
    rhythm_trees: Annotated[Optional[Path], typer.Option(
        help="Flamingo, ECG task only, with --rhythm-vector: training/pretrain_rhythm_trees.py's --out DIR, boosted trees "
             "over the rhythm vector whose label log-probabilities the encoder reads (out of fold for training records "
             "while training); the trees stay frozen")] = None,
    minirocket_stem: Annotated[Optional[Path], typer.Option(
        help="Flamingo, HAR, with --scale-token: a fitted MiniRocket + ridge stem (training/pretrain_minirocket_stem.py's "
             "stem.safetensors) over each window's three axes, whose scores the encoder reads; the stem stays frozen")] = None,
    fusion_layers: Annotated[str, typer.Option(
        help="Flamingo: decoder layers that get a cross-attention block, e.g. 25,27,29 (default: every 5th from the "
             "middle); a stream pays per window for every layer from the first one on")] = "",
    group_targets: Annotated[bool, typer.Option(
        help="batches of answer-only or of rationale examples, never mixed: the classify path's loss is not drowned by "
             "the rationales' tokens, and answer-only batches train about twice as fast")] = False,
    train_groups: Annotated[str, typer.Option(
        help="train the final task only on these groups of its train split, e.g. HAR subjects subject-3,subject-7 "
             "(those a stem was not fitted on: pretrain_minirocket_stem.py --fit-groups)")] = "",
    train_only: Annotated[str, typer.Option(
        help="train only the weights under these name prefixes, e.g. series_encoder.stem_embed. (the rest stays as built "
             "or loaded)")] = "",
    stem_logits_only: Annotated[bool, typer.Option(
        help="with --ecg-stem: the encoder reads only the stem's label logits, not its hidden layer")] = False,
    stem_latents: Annotated[bool, typer.Option(
        help="with --ecg-stem or --minirocket-stem: the stem's embedding is also added to every resampler latent, so the "
             "fusion blocks read it directly")] = False,
    encoder_dropout: Annotated[float, typer.Option(
        help="dropout on the encoder's patch embeddings while training, in [0, 1)")] = 0.0,
    export: Annotated[Optional[Path], typer.Option(help="copy the final best artifact here")] = None,
) -> None:
    """Train at full precision; each stage starts from the previous stage's best checkpoint."""
    import shutil

    from dataclasses import replace

    from edge_tslm.config import EncoderConfig, TSLMConfig, parse_fusion_layers
    from edge_tslm.model import build_model
    from edge_tslm.train.loop import TrainConfig
    from edge_tslm.train.recipe import run_curriculum

    names = (stages or f"tsqa,{task}").split(",")
    if series_features is not None:
        from edge_tslm.prompts import SERIES_FEATURES

        if series_features not in SERIES_FEATURES:
            raise typer.BadParameter(f"{series_features!r} is not a text layout; use one of {SERIES_FEATURES}",
                                     param_hint="--series-features")
    if series_text is not None:
        from edge_tslm.prompts import SERIES_TEXTS

        if series_text not in SERIES_TEXTS:
            raise typer.BadParameter(f"{series_text!r} is not a series text; use one of {SERIES_TEXTS}", param_hint="--series-text")
    if series_text == "none" and not scale_token:
        raise typer.BadParameter("'none' leaves each series' mean and std out of the text: add --scale-token so the "
                                 "encoder reads them", param_hint="--series-text")
    if scale_token and variant != "flamingo":
        raise typer.BadParameter("the scale embedding (--scale-token) is a Flamingo encoder option", param_hint="--scale-token")
    if rhythm_vector and (variant != "flamingo" or any(n.startswith("har") or n.startswith("tsqa") for n in names)):
        raise typer.BadParameter(f"the rhythm vector is a Flamingo encoder option for ECG stages only (variant {variant!r}, "
                                 f"stages {','.join(names)!r}): pass --stages ecg_rhythm, or continue another stage's adapter with "
                                 "training/curriculum.py --init ... --rhythm-vector",
                                 param_hint="--rhythm-vector")
    if ecg_stem is not None and not rhythm_vector:
        raise typer.BadParameter("the ECG stem's head reads the rhythm vector: add --rhythm-vector", param_hint="--ecg-stem")
    if ecg_stem is not None and not ecg_stem.is_file():
        raise typer.BadParameter(f"{ecg_stem} is not a file; train one with python training/pretrain_ecg_stem.py --out DIR "
                                 "and pass DIR/stem.safetensors", param_hint="--ecg-stem")
    trees_shape: tuple[int, ...] = ()
    if rhythm_trees is not None:
        from edge_tslm.train.recipe import rhythm_trees_shape

        if not rhythm_vector:
            raise typer.BadParameter("the trees read the rhythm vector: add --rhythm-vector", param_hint="--rhythm-trees")
        try:
            trees_shape = rhythm_trees_shape(rhythm_trees)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--rhythm-trees") from None
    if minirocket_stem is not None and not (scale_token and variant == "flamingo"):
        raise typer.BadParameter("the MiniRocket stem reads each window as recorded: a Flamingo model with --scale-token",
                                 param_hint="--minirocket-stem")
    if minirocket_stem is not None and not minirocket_stem.is_file():
        raise typer.BadParameter(f"{minirocket_stem} is not a file; fit one with python training/pretrain_minirocket_stem.py "
                                 "--out DIR and pass DIR/stem.safetensors", param_hint="--minirocket-stem")
    if stem_latents and ecg_stem is None and minirocket_stem is None:
        raise typer.BadParameter("adds a stem's embedding to the latents: pass --ecg-stem or --minirocket-stem too",
                                 param_hint="--stem-latents")
    if stem_logits_only and ecg_stem is None:
        raise typer.BadParameter("picks what the encoder reads of the ECG stem: pass --ecg-stem too", param_hint="--stem-logits-only")
    if not 0.0 <= encoder_dropout < 1.0:
        raise typer.BadParameter(f"must be in [0, 1), got {encoder_dropout}", param_hint="--encoder-dropout")
    try:
        layers = parse_fusion_layers(fusion_layers)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--fusion-layers") from None
    if layers and variant != "flamingo":
        raise typer.BadParameter("Flamingo's cross-attention blocks; SoftPrompt has none", param_hint="--fusion-layers")
    layout = {k: v for k, v in (("series_features", series_features), ("series_text", series_text)) if v is not None}
    if question_first:
        layout["question_first"] = True
    cfg = TSLMConfig(variant=variant, backbone=backbone, encoder=EncoderConfig(dropout=encoder_dropout, scale_token=scale_token,
                                                                                rhythm_vector=rhythm_vector,
                                                                                ecg_stem=ecg_stem is not None,
                                                                                minirocket_stem=minirocket_stem is not None,
                                                                                stem_at_latents=stem_latents,
                                                                                stem_logits_only=stem_logits_only,
                                                                                rhythm_trees=trees_shape))
    if layers:
        cfg = cfg.replace(fusion=replace(cfg.fusion, layers=layers))
    model = build_model(cfg)
    if ecg_stem is not None or minirocket_stem is not None:
        from edge_tslm.train.recipe import load_stem

        load_stem(model, ecg_stem or minirocket_stem)
    if rhythm_trees is not None:
        from edge_tslm.train.recipe import load_rhythm_trees

        load_rhythm_trees(model, rhythm_trees)
    if train_only:
        from edge_tslm.train.recipe import train_only as freeze_all_but

        try:
            freeze_all_but(model, [p for p in train_only.split(",") if p])
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--train-only") from None
    try:
        res = run_curriculum(
            model,
            names,
            out,
            data_paths={task: str(data)} if data else None,
            train_cfg=TrainConfig(batch_size=batch_size, bf16=bf16, seed=seed, max_steps=steps, time_limit_s=minutes * 60,
                                  activation_checkpointing=activation_checkpointing, group_targets=group_targets),
            stage_layout={names[-1]: layout} if layout else None,
            train_groups=frozenset(g for g in train_groups.split(",") if g) or None,
        )
    except ValueError as e:  # bad data or groups: said once, without a traceback
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    best = out / f"stage{len(names)}-{names[-1]}" / "best"
    if export:
        shutil.copytree(best, export, dirs_exist_ok=True)
    typer.echo(json.dumps({"best": str(best), "results": res["results"]}, indent=1))
