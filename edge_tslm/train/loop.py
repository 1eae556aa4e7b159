"""The training loop: full precision (fp32 master weights, optional bf16 autocast), loss on the target
tokens only, per-part AdamW, warmup + cosine, clipping, early stopping on validation loss, resumable
checkpoints, rich progress and a JSONL metrics log. Multi-process through torch DDP under torchrun."""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from edge_tslm.model.artifact import save_pretrained
from edge_tslm.model.batch import collate
from edge_tslm.train.checkpoint import load_checkpoint, save_checkpoint
from edge_tslm.train.examples import Example
from edge_tslm.train.optim import param_groups, warmup_cosine


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/default"
    epochs: float = 1.0
    max_steps: int = 0  # 0: epochs decide
    batch_size: int = 8  # per process
    lr_encoder: float = 3e-4
    lr_fusion: float = 1e-4
    lr_tokens: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    grad_clip: float = 1.0
    eval_every: int = 100
    val_batches: int = 8
    patience: int = 4  # evaluations without a better validation loss before stopping
    seed: int = 0
    bf16: bool = False
    activation_checkpointing: bool = False  # recompute activations in the backward: less memory, ~1 more forward
    log_every: int = 10
    time_limit_s: float = 0.0  # stop cleanly (best checkpoint kept) after this long; 0: no limit
    stop_step: int = 0  # stop after this step without changing the schedule (replays a time-limited run)
    # Each batch holds answer-only examples or rationale examples, never both (see epoch_batches)
    group_targets: bool = False
    progress: bool = True


def _dist() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _LossModule(torch.nn.Module):
    """What DDP wraps: forward(batch) -> loss, so gradients are all-reduced by torch's own engine."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def bf16_is_fast(device: torch.device) -> bool:
    """False (with a warning) on a CPU without bf16 instructions (AVX512-BF16 or AMX): torch emulates bf16 there, and
    a SmolLM2 Flamingo step runs many times slower under bf16 autocast than in fp32 (`benchmarks/train_step_time.py`,
    `benchmarks/results/train_step_time.md`). The run then trains in fp32, which is what bf16 approximates."""
    if device.type != "cpu":
        return True
    from edge_tslm.machine import machine_cpu_isa

    isa = machine_cpu_isa()
    if isa is None or {"avx512_bf16", "amx_tile"} & set(isa):
        return True  # unknown CPU (no /proc/cpuinfo, e.g. macOS): do as asked
    warnings.warn(f"bf16 autocast requested, but this CPU has no bf16 instructions (ISA: {', '.join(isa) or 'no AVX2'}); "
                  "torch would emulate it, many times slower than fp32 (benchmarks/results/train_step_time.md), so this run "
                  "trains in fp32", stacklevel=3)
    return False


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    model,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example] = (),
    cfg: TrainConfig = TrainConfig(),
    *,
    metrics_extra: dict | None = None,
) -> dict:
    """Train the model's adapter in place; the best (lowest validation loss) artifact lands in out_dir/best.
    Activation checkpointing (cfg.activation_checkpointing) is switched off again however training ends."""
    if not cfg.activation_checkpointing:
        return _train(model, train_examples, val_examples, cfg, metrics_extra)
    model.set_activation_checkpointing(True)
    try:
        return _train(model, train_examples, val_examples, cfg, metrics_extra)
    finally:
        model.set_activation_checkpointing(False)


def _train(model, train_examples: Sequence[Example], val_examples: Sequence[Example], cfg: TrainConfig,
           metrics_extra: dict | None) -> dict:
    """The loop itself; see train."""
    rank, world = _dist()
    _seed(cfg.seed)
    cfg = replace(cfg, bf16=cfg.bf16 and bf16_is_fast(model.device))
    if cfg.bf16:
        # The frozen backbone in bf16 is what autocast computes with anyway (it re-casts frozen weights
        # at every op); the trainable parts keep fp32 master weights.
        model.lm.to(torch.bfloat16)
    out = Path(cfg.out_dir)
    device = model.device
    rationale = [bool(getattr(e, "rationale", False)) for e in train_examples]
    if cfg.group_targets:
        for kind, n in (("answer-only", rationale.count(False)), ("rationale", rationale.count(True))):
            if 0 < n < cfg.batch_size * world <= len(rationale):
                warnings.warn(f"group_targets: only {n} {kind} examples, fewer than one global batch of "
                              f"{cfg.batch_size * world}: they are never trained on; lower the batch size or change "
                              "the rationale share", stacklevel=2)
    steps_per_epoch = max(1, len(epoch_batches(rationale, cfg.batch_size * world, cfg.seed, 0, cfg.group_targets)))
    total = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(
        param_groups(model, cfg.lr_encoder, cfg.lr_fusion, cfg.lr_tokens, cfg.weight_decay), betas=(0.9, 0.95)
    )
    base_lrs = [g["lr"] for g in opt.param_groups]
    state = {"step": 0, "best_val": float("inf"), "bad_evals": 0, "seed": cfg.seed}
    if (out / "last").exists():
        state.update(load_checkpoint(model, opt, out / "last"))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr
    net = _LossModule(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=False)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "a") if rank == 0 else None
    if rank == 0:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    t0, step = time.time(), int(state["step"])
    progress = _progress(cfg.progress and rank == 0, total, step)

    def batches(epoch: int):
        # Global batch k is the same whatever the world size; each process takes its slice r::world of it. So a 2x2
        # run sees, step by step, the same examples as a 1x4 run, every process runs the same number of steps per
        # epoch, and a resume skips the same batches.
        for idx in epoch_batches(rationale, cfg.batch_size * world, cfg.seed, epoch, cfg.group_targets)[:steps_per_epoch]:
            yield [train_examples[j] for j in idx[rank::world]]

    model.train()
    stop = step >= total  # resuming a finished run trains nothing more
    epoch = step // steps_per_epoch
    while not stop:
        for k, exs in enumerate(batches(epoch)):
            if epoch * steps_per_epoch + k < step:
                continue  # resume: skip what was already trained on
            mult = warmup_cosine(step, cfg.warmup_steps, total)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * mult
            batch = _collate(model, exs).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = net(batch)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            rec = {"step": step, "loss": _mean_across(loss.detach(), world), "grad_norm": float(gnorm), "lr_mult": mult, "time_s": time.time() - t0}
            if step % cfg.eval_every == 0 or step == total:
                rec["val_loss"] = evaluate_loss(model, val_examples, cfg) if val_examples else float("nan")
                model.train()
                if rank == 0:
                    improved = rec["val_loss"] < state["best_val"] or not val_examples
                    if improved:
                        state["best_val"], state["bad_evals"] = rec["val_loss"], 0
                        save_pretrained(model, out / "best", metrics={"val_loss": rec["val_loss"], "step": step, **(metrics_extra or {})})
                    else:
                        state["bad_evals"] += 1
                    state["step"] = step
                    save_checkpoint(model, opt, out / "last", state)
                stop = _broadcast_flag(state["bad_evals"] >= cfg.patience, world, device)
            if log and (step % cfg.log_every == 0 or "val_loss" in rec):
                log.write(json.dumps(rec) + "\n")
                log.flush()
            progress(step, rec)
            if cfg.stop_step and step >= cfg.stop_step:
                stop = True
            if cfg.time_limit_s:  # every process joins the broadcast (rank 0's clock decides)
                stop = _broadcast_flag(time.time() - t0 > cfg.time_limit_s, world, device) or stop
            if stop or step >= total:
                stop = True
                break
        epoch += 1
    if rank == 0:
        if not (out / "best").exists():
            save_pretrained(model, out / "best", metrics={"step": step})
        state["step"] = step
        save_checkpoint(model, opt, out / "last", state)
    progress(None, None)
    if log:
        log.close()
    return {"step": step, "best_val_loss": state["best_val"], "time_s": time.time() - t0}


def epoch_batches(rationale: Sequence[bool], global_batch: int, seed: int, epoch: int, grouped: bool) -> list[list[int]]:
    """One epoch's global batches of example indices (full batches only), shuffled by seed + epoch.

    grouped: every batch is all answer-only or all rationale examples. The loss is a mean over target tokens, so in a
    mixed batch the rationales' ~80 tokens each outweigh the answers' ~3 (the classify path's own loss, the one
    validation early-stops on, got 0.139 of an ECG batch's), and the whole batch is padded to a rationale's length
    (benchmarks/train_batch_layout.py). The epoch keeps the same share of rationale examples."""
    rng = np.random.default_rng(seed + epoch)
    if not grouped or len(rationale) < global_batch:  # fewer examples than a batch: one short batch of them all
        order = rng.permutation(len(rationale))
        return [order[k * global_batch : (k + 1) * global_batch].tolist() for k in range(max(1, len(order) // global_batch))]
    kinds = np.asarray(rationale, dtype=bool)
    out = []
    for members in (np.flatnonzero(~kinds), np.flatnonzero(kinds)):
        order = rng.permutation(members)
        out += [order[k * global_batch : (k + 1) * global_batch].tolist() for k in range(len(order) // global_batch)]
    return [out[i] for i in rng.permutation(len(out))]


def _collate(model, exs: Sequence[Example]):
    return collate(
        model.tokenizer,
        [e.text for e in exs],
        [e.series for e in exs],
        [e.target for e in exs],
        chat_format=model.cfg.chat_format,
        system=model.cfg.pre_prompt,
    )


@torch.no_grad()
def evaluate_loss(model, examples: Sequence[Example], cfg: TrainConfig) -> float:
    """Mean target-token loss on a fixed slice of the validation set."""
    model.eval()
    n = min(len(examples), cfg.val_batches * cfg.batch_size)
    losses = []
    for i in range(0, n, cfg.batch_size):
        batch = _collate(model, examples[i : i + cfg.batch_size]).to(model.device)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            losses.append(float(model.loss(batch)))
    return float(np.mean(losses)) if losses else float("nan")


def _broadcast_flag(flag: bool, world: int, device: torch.device | str = "cpu") -> bool:
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def _mean_across(loss: torch.Tensor, world: int) -> float:
    """The step's loss averaged over processes (what a single process with the global batch would log)."""
    if world == 1:
        return loss.item()
    t = loss.float().reshape(1).clone()
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.item() / world


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return lambda step, rec: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    bar.start()
    task = bar.add_task("train", total=total, completed=start, info="")

    def update(step, rec):
        if step is None:
            bar.stop()
            return
        info = f"loss {rec['loss']:.3f}" + (f" val {rec['val_loss']:.3f}" if "val_loss" in rec else "")
        bar.update(task, completed=step, info=info)

    return update
