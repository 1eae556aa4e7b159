"""New special tokens (<ts>, <endofchunk>) whose embedding rows train while the LM's matrix stays frozen."""

from __future__ import annotations

import torch
from torch import nn


class NewTokenEmbedding(nn.Module):
    """Embeds ids >= base_vocab with its own small table; all others through the frozen LM embedding."""

    def __init__(self, lm_embedding: nn.Embedding, base_vocab: int, num_new: int):
        super().__init__()
        self.base_vocab = base_vocab
        with torch.no_grad():  # start at the mean embedding, at the scale the LM's embedding outputs
            ids = torch.arange(min(base_vocab, 8192), device=lm_embedding.weight.device)
            init = lm_embedding(ids).float().mean(0, keepdim=True).repeat(num_new, 1)
        self.weight = nn.Parameter(init.clone())  # (num_new, D)

    def forward(self, input_ids: torch.Tensor, lm_embedding: nn.Module) -> torch.Tensor:
        """input_ids: (B, T) -> (B, T, D)."""
        is_new = input_ids >= self.base_vocab
        base = lm_embedding(input_ids.clamp(max=self.base_vocab - 1))  # (B, T, D)
        new = self.weight[(input_ids - self.base_vocab).clamp(min=0, max=self.weight.shape[0] - 1)]
        return torch.where(is_new[..., None], new.to(base.dtype), base)


def add_ts_tokens(tokenizer) -> int:
    """Add <ts>/<endofchunk> to the tokenizer (once); return the first id that is ours (the LM's vocab end)."""
    from edge_tslm.constants import SPECIAL_TOKENS

    vocab = tokenizer.get_vocab()
    if all(t in vocab for t in SPECIAL_TOKENS):
        return min(vocab[t] for t in SPECIAL_TOKENS)
    base_vocab = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return base_vocab
