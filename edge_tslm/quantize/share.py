"""One gated cross-attention block reused at every insertion point, then a short distilled recovery.

    teacher = from_pretrained(path)                 # the unshared model (a separate copy)
    report = share_xattn_(model, init="best", examples=train[:16])
    rec = recover_shared(model, teacher, train, steps=200)

Initialisation (``init``):
  "mean"  the element-wise mean of the trained blocks (weights, norms and gates). Needs no data, but the
          blocks were trained from different random inits, so their heads do not line up and the mean of
          attention weights mostly cancels: expect a large drop that recovery must win back.
  "best"  the single trained block that, reused everywhere, stays closest to the unshared model
          (lowest distillation loss on ``examples``). The default when examples are given: it starts
          recovery from a working block rather than an average of unaligned ones.
  int     the block at that position in ``model.insertion``.

The fused-block hooks capture their block when installed, so sharing re-installs them (every decoder
layer at an insertion point then calls the one shared module) and ``model.xattn`` maps every insertion
index to that same module. The config records ``fusion.shared=True`` where FusionConfig has that field;
until then the manifest's transform list carries it and ``load_compressed`` re-shares.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edge_tslm.quantize.api import compression_record, is_quantized_module, parameter_count


@dataclass
class ShareReport:
    blocks: int
    init: str
    chosen: int | None  # position in model.insertion of the block used ("best" / int), None for "mean"
    params_before: int
    params_after: int
    candidate_losses: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"op": "share_xattn", **dataclasses.asdict(self), "params_removed": self.params_before - self.params_after}


def is_shared(model: nn.Module) -> bool:
    blocks = getattr(model, "xattn", None)
    return bool(blocks) and len({id(b) for b in blocks.values()}) == 1 and len(blocks) > 1


def install_blocks(model: nn.Module, blocks: dict[int, nn.Module]) -> None:
    """Point model.xattn and the decoder-layer hooks at ``blocks`` (insertion index -> module)."""
    from edge_tslm.backbones import decoder_layers
    from edge_tslm.model.fusion import install_fusion_hooks

    for i, b in blocks.items():
        model.xattn[str(i)] = b
    for h in model._hooks:
        h.remove()
    model._hooks = install_fusion_hooks(decoder_layers(model.lm), blocks)


def _mean_block(blocks: list[nn.Module]) -> nn.Module:
    shared = copy.deepcopy(blocks[0])
    states = [b.state_dict() for b in blocks]
    with torch.no_grad():
        for name, t in shared.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.stack([s[name] for s in states]).mean(0))
    return shared


def _mark_shared(model: nn.Module) -> None:
    fusion = model.cfg.fusion
    if "shared" in {f.name for f in dataclasses.fields(fusion)}:
        model.cfg = model.cfg.replace(fusion=dataclasses.replace(fusion, shared=True))


def share_xattn_(
    model: nn.Module,
    init: str | int = "best",
    examples: Sequence | None = None,
    *,
    batch_size: int = 4,
) -> ShareReport:
    """Replace the Flamingo model's gated cross-attention blocks by one shared block, in place."""
    if not hasattr(model, "xattn"):
        raise ValueError(f"share_xattn_ needs a Flamingo model; this is a {model.cfg.variant!r} model (no xattn blocks)")
    if is_shared(model):
        raise ValueError("the cross-attention blocks are already shared")
    if any(is_quantized_module(m) for m in model.xattn.modules()):
        raise RuntimeError("the xattn blocks are quantized: share before quantizing")
    blocks = [model.xattn[str(i)] for i in model.insertion]
    before = parameter_count(model)
    if init == "best" and not examples:
        init = "mean"  # no data to choose with
    losses = None
    if init == "mean":
        shared, chosen = _mean_block(blocks), None
    elif init == "best":
        batch = _collate(model, list(examples)[:batch_size]).to(model.device)
        with torch.no_grad():
            t_logits = _answer_logits(model, batch)[0]
            losses = []
            for b in blocks:
                install_blocks(model, {i: b for i in model.insertion})
                s_logits, tgt = _answer_logits(model, batch)
                losses.append(float(_kl(s_logits, t_logits, 1.0)))
        chosen = int(np.argmin(losses))
        shared = copy.deepcopy(blocks[chosen])
    elif isinstance(init, int):
        chosen = init
        shared = copy.deepcopy(blocks[init])
    else:
        raise ValueError(f"init must be 'mean', 'best' or a block position, got {init!r}")
    install_blocks(model, {i: shared for i in model.insertion})
    _mark_shared(model)
    rep = ShareReport(len(blocks), str(init), chosen, before, parameter_count(model), losses)
    compression_record(model).setdefault("transforms", []).append(rep.to_dict())
    return rep


# ---------------------------------------------------------------------------------------- distillation


def _collate(model, exs: Sequence):
    from edge_tslm.model.batch import collate

    return collate(
        model.tokenizer,
        [e.text for e in exs],
        [list(e.series) for e in exs],
        [e.target for e in exs],
        chat_format=model.cfg.chat_format,
        system=model.cfg.pre_prompt,
    )


def _answer_logits(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions that predict target tokens (K, V) and those targets (K,)."""
    from edge_tslm.model.batch import IGNORE

    hidden, labels = model.hidden_states(batch)
    tgt = labels[:, 1:]
    keep = tgt != IGNORE
    return model.head(hidden[:, :-1][keep]).float(), tgt[keep]


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, per token, times T^2."""
    t = temperature
    log_p_s = torch.log_softmax(student / t, -1)
    log_p_t = torch.log_softmax(teacher / t, -1)
    return torch.nn.functional.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * t * t


def distill_loss(student, teacher, batch, *, temperature: float = 1.0, alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """alpha * KL(teacher || student) on the answer-token logits + (1 - alpha) * CE on the targets."""
    with torch.no_grad():
        t_logits, _ = _answer_logits(teacher, batch)
    s_logits, tgt = _answer_logits(student, batch)
    kl = _kl(s_logits, t_logits, temperature)
    ce = torch.nn.functional.cross_entropy(s_logits, tgt)
    return {"loss": alpha * kl + (1 - alpha) * ce, "kl": kl, "ce": ce}


def recover_shared(
    model,
    teacher,
    examples: Sequence,
    steps: int,
    *,
    lr: float = 1e-4,
    batch_size: int = 4,
    temperature: float = 1.0,
    alpha: float = 0.5,
    train: str = "xattn",
    seed: int = 0,
    grad_clip: float = 1.0,
) -> dict[str, Any]:
    """A short fine-tune of the shared model distilled from the unshared ``teacher`` (a separate model).

    ``train``: "xattn" updates only the shared block; "adapter" every adapter parameter. Returns the loss
    history and the distillation loss on the first batch before and after (eval mode, same batch).
    """
    if not examples:
        raise ValueError("recover_shared needs examples with targets")
    if teacher is model:
        raise ValueError("teacher must be a separate, unshared model (e.g. from_pretrained of the source artifact)")
    if train == "xattn":
        params = list(dict.fromkeys(model.xattn.parameters()))
    elif train == "adapter":
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        raise ValueError(f"train must be 'xattn' or 'adapter', got {train!r}")
    was = {id(p): p.requires_grad for p in model.parameters()}
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    teacher.eval()
    rng = np.random.default_rng(seed)
    probe = _collate(model, list(examples)[:batch_size]).to(model.device)

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(distill_loss(model, teacher, probe, temperature=temperature, alpha=alpha)["loss"])

    before = probe_loss()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    history = []
    model.train()
    for step in range(steps):
        idx = rng.choice(len(examples), size=min(batch_size, len(examples)), replace=False)
        batch = _collate(model, [examples[i] for i in idx]).to(model.device)
        out = distill_loss(model, teacher, batch, temperature=temperature, alpha=alpha)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append({k: float(v.detach()) for k, v in out.items()})
    after = probe_loss()
    for p in model.parameters():
        p.requires_grad_(was[id(p)])
    rec = {
        "op": "recover_shared",
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "alpha": alpha,
        "temperature": temperature,
        "train": train,
        "probe_loss_before": before,
        "probe_loss_after": after,
        "loss_first": history[0]["loss"] if history else None,
        "loss_last": history[-1]["loss"] if history else None,
    }
    compression_record(model).setdefault("transforms", []).append(rec)
    return {**rec, "history": history}
