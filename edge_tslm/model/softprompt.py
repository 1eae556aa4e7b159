"""OpenTSLM-SoftPrompt: PatchEncoder -> TransformerEncoder -> MLP projector; the series' tokens are spliced
into the LM input at each <ts> marker, and the LM is tuned with LoRA (peft)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from edge_tslm.backbones import BackboneInfo
from edge_tslm.config import TSLMConfig
from edge_tslm.constants import SPECIAL_TOKENS, TS_TOKEN
from edge_tslm.model.base import DecodeState, TSLMBase
from edge_tslm.model.batch import IGNORE, TSBatch
from edge_tslm.model.checkpointing import CheckpointableBlock
from edge_tslm.model.encoder import PatchEncoder, check_series_lengths
from edge_tslm.model.tokens import NewTokenEmbedding, add_ts_tokens


class SoftPromptEncoder(CheckpointableBlock):
    """Series (K, L) -> soft tokens (K, P, D_lm) + patch mask (K, P). Checkpointed as one block."""

    def __init__(self, cfg: TSLMConfig, lm_dim: int):
        super().__init__()
        e, sp = cfg.encoder, cfg.softprompt
        self.patch = PatchEncoder(e)
        layer = nn.TransformerEncoderLayer(
            e.dim, sp.heads, e.dim * sp.ff_mult, dropout=e.dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.transformer = nn.TransformerEncoder(layer, sp.encoder_layers, enable_nested_tensor=False)
        self.project = nn.Sequential(nn.Linear(e.dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))

    def forward(self, series: torch.Tensor, mask: torch.Tensor, series_index: torch.Tensor):
        h, patch_mask = self.patch(series, mask, series_index)  # (K, P, E), (K, P)
        h = self.transformer(h, src_key_padding_mask=~patch_mask)  # (K, P, E)
        return self.project(h), patch_mask  # (K, P, D_lm)


class SoftPromptTSLM(TSLMBase):
    def __init__(self, cfg: TSLMConfig, lm: nn.Module, tokenizer, info: BackboneInfo):
        from peft import LoraConfig, get_peft_model

        base_vocab = add_ts_tokens(tokenizer)
        self_ts = tokenizer.convert_tokens_to_ids(TS_TOKEN)
        sp = cfg.softprompt
        lora = LoraConfig(
            r=sp.lora_r, lora_alpha=sp.lora_alpha, lora_dropout=sp.lora_dropout, target_modules=list(sp.lora_targets)
        )
        super().__init__(cfg, get_peft_model(lm, lora), tokenizer, info)
        self.ts_id = self_ts
        self.soft_encoder = SoftPromptEncoder(cfg, lm.config.hidden_size)
        self.new_tokens = NewTokenEmbedding(lm.get_input_embeddings(), base_vocab, len(SPECIAL_TOKENS))
        self.freeze_backbone()

    def splice(self, batch: TSBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace each <ts> by its series' soft tokens -> embeds (B, T', D), attention (B, T'), labels (B, T')."""
        B, S, L = batch.series.shape
        check_series_lengths(batch.series_mask, self.cfg.encoder.patch_len)
        present = batch.series_mask.any(-1)  # (B, S)
        b_idx, s_idx = present.nonzero(as_tuple=True)
        soft, pmask = None, None
        if len(b_idx):
            used = int(batch.series_mask.any(1).any(0).nonzero().max()) + 1
            soft, pmask = self.soft_encoder(
                batch.series[b_idx, s_idx, :used], batch.series_mask[b_idx, s_idx, :used], s_idx
            )  # (K, P, D), (K, P)
        lookup = {(int(b), int(s)): k for k, (b, s) in enumerate(zip(b_idx, s_idx))}
        text = self.new_tokens(batch.input_ids, self.lm.get_input_embeddings())  # (B, T, D)
        rows, labs = [], []
        for b in range(B):
            n = int(batch.attention_mask[b].sum())
            ids = batch.input_ids[b, :n]
            ts_at = (ids == self.ts_id).nonzero()[:, 0].tolist()
            if len(ts_at) != int(present[b].sum()):
                raise ValueError(f"sample {b}: {len(ts_at)} {TS_TOKEN} tokens but {int(present[b].sum())} series")
            pieces, lab_pieces, prev = [], [], 0
            for s, t in enumerate(ts_at):
                k = lookup[(b, s)]
                pieces += [text[b, prev:t], soft[k][pmask[k]].to(text.dtype)]
                if batch.labels is not None:
                    lab_pieces += [batch.labels[b, prev:t], batch.labels.new_full((int(pmask[k].sum()),), IGNORE)]
                prev = t + 1
            pieces.append(text[b, prev:n])
            rows.append(torch.cat(pieces))
            if batch.labels is not None:
                lab_pieces.append(batch.labels[b, prev:n])
                labs.append(torch.cat(lab_pieces))
        T = max(len(r) for r in rows)
        embeds = text.new_zeros(B, T, text.shape[-1])
        attn = batch.attention_mask.new_zeros(B, T)
        labels = batch.input_ids.new_full((B, T), IGNORE) if batch.labels is not None else None
        for b, r in enumerate(rows):
            embeds[b, : len(r)] = r
            attn[b, : len(r)] = 1
            if labels is not None:
                labels[b, : len(r)] = labs[b]
        return embeds, attn, labels

    def hidden_states(self, batch: TSBatch):
        embeds, attn, labels = self.splice(batch)
        out = self.decoder()(inputs_embeds=embeds, attention_mask=attn, use_cache=False)
        return out.last_hidden_state, labels

    def prefill(self, batch: TSBatch):
        embeds, attn, _ = self.splice(batch)
        cache = DynamicCache(config=self.lm.config)
        out = self.decoder()(inputs_embeds=embeds, attention_mask=attn, past_key_values=cache, use_cache=True)
        return self.head(out.last_hidden_state[:, -1]), DecodeState(out.past_key_values, embeds.shape[1])

    def decode(self, input_ids: torch.Tensor, state: DecodeState):
        embeds = self.new_tokens(input_ids, self.lm.get_input_embeddings())
        T = input_ids.shape[1]
        pos = torch.arange(state.length, state.length + T, device=input_ids.device)[None].expand(input_ids.shape[0], -1)
        out = self.decoder()(inputs_embeds=embeds, past_key_values=state.past_key_values, use_cache=True, position_ids=pos)
        return self.head(out.last_hidden_state), DecodeState(out.past_key_values, state.length + T)
