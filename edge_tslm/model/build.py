"""Build a TSLM of either variant around a backbone loaded by name."""

from __future__ import annotations

from edge_tslm.backbones import load_backbone
from edge_tslm.config import TSLMConfig


def build_model(cfg: TSLMConfig, backbone=None):
    """backbone: optional (lm, tokenizer, info) already loaded; else loaded by cfg.backbone."""
    lm, tok, info = backbone if backbone is not None else load_backbone(cfg.backbone)
    if cfg.backbone_sha256 and info.sha256 and cfg.backbone_sha256 != info.sha256:
        raise ValueError(
            f"backbone {cfg.backbone!r} has sha256 {info.sha256[:12]}… but this artifact was trained on "
            f"{cfg.backbone_sha256[:12]}…: load the backbone it names, or retrain"
        )
    cfg.check_answer_end_token(tok.convert_ids_to_tokens(tok.eos_token_id), f"backbone {cfg.backbone!r}")
    cfg = cfg.replace(backbone=info.name if cfg.backbone == info.name else cfg.backbone, backbone_sha256=info.sha256)
    if cfg.variant == "flamingo":
        from edge_tslm.model.flamingo import FlamingoTSLM

        return FlamingoTSLM(cfg, lm, tok, info)
    if cfg.variant == "softprompt":
        from edge_tslm.model.softprompt import SoftPromptTSLM

        return SoftPromptTSLM(cfg, lm, tok, info)
    raise ValueError(f"unknown variant {cfg.variant!r}: use 'flamingo' or 'softprompt'")
