"""OpenTSLM-Flamingo: PatchEncoder -> PerceiverResampler -> gated cross-attention into a frozen causal LM."""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from edge_tslm.backbones import BackboneInfo, decoder_layers
from edge_tslm.config import EncoderConfig, ResamplerConfig, TSLMConfig
from edge_tslm.constants import SPECIAL_TOKENS, TS_TOKEN
from edge_tslm.length_groups import length_groups
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_SCALES, series_rhythm_vectors
from edge_tslm.model.base import DecodeState, TSLMBase
from edge_tslm.model.batch import IGNORE, TSBatch
from edge_tslm.model.checkpointing import CheckpointableBlock
from edge_tslm.model.augment import augment_windows
from edge_tslm.model.ecg_stem import EcgStem, EcgStemConfig, StemEmbedding
from edge_tslm.model.minirocket_stem import MiniRocketConfig, MiniRocketStem, sample_channels
from edge_tslm.model.rhythm_trees import RhythmTrees
from edge_tslm.model.encoder import PatchEncoder, ScaleEmbedding, VectorEmbedding, check_series_lengths, masked_znormalize
from edge_tslm.model.fusion import ALLOWED_KWARG, MEDIA_KWARG, GatedCrossAttention, install_fusion_hooks, media_allowed
from edge_tslm.model.prefix_cache import croppable
from edge_tslm.model.resampler import PerceiverResampler
from edge_tslm.model.tokens import NewTokenEmbedding, add_ts_tokens

ABSENT = 1 << 30  # <ts> position of a series a sample does not have: no token ever sees it


class SeriesEncoder(CheckpointableBlock):
    """Encoder + resampler: one series of any length -> num_latents vectors. This is the exported graph.
    Checkpointed as one block, one series per call (encode_media), when activation checkpointing is on.
    With enc.scale_token the series come as recorded: the graph z-normalises them and adds their scale embedding.
    With enc.rhythm_vector each series' measured rhythm (K, F) comes beside it and is added to its patches too.
    With enc.ecg_stem a pretrained CNN reads each whole series (and its rhythm vector); its features are added too.
    With enc.rhythm_trees boosted trees read the rhythm vector; their label log-probabilities are added too.
    With enc.stem_at_latents the stem's features are added to every latent too (a second projection).
    With enc.minirocket_stem MiniRocket + ridge reads each sample's C series together (as recorded): the K rows then
    come as whole samples, C rows each in axis order, and every row of a sample gets the sample's scores."""

    def __init__(self, enc: EncoderConfig, res: ResamplerConfig):
        super().__init__()
        self.encoder = PatchEncoder(enc)
        self.resampler = PerceiverResampler(enc.dim, res)
        self.scale = ScaleEmbedding(enc.dim) if enc.scale_token else None
        self.rhythm = VectorEmbedding(RHYTHM_VECTOR_SCALES, enc.dim) if enc.rhythm_vector else None
        # frozen: FlamingoTSLM.freeze_backbone
        self.stem = (EcgStem(EcgStemConfig(dropout=0.0)) if enc.ecg_stem
                     else MiniRocketStem(MiniRocketConfig()) if enc.minirocket_stem else None)
        # what the encoder reads of the stem: everything it outputs, or (enc.stem_logits_only) its label logits alone,
        # through a projection of another name, so an adapter trained on the whole output is not loaded into it
        self.stem_width = (self.stem.cfg.num_labels if enc.stem_logits_only else self.stem.cfg.feature_dim) if self.stem is not None else 0
        embed = StemEmbedding(self.stem_width, enc.dim) if self.stem is not None else None
        self.stem_embed = None if enc.stem_logits_only else embed
        self.stem_logit_embed = embed if enc.stem_logits_only else None
        self.stem_latents = StemEmbedding(self.stem_width, enc.dim) if enc.stem_at_latents else None
        self.trees = RhythmTrees(*enc.rhythm_trees[:3], len(RHYTHM_VECTOR_SCALES), enc.rhythm_trees[3]) if enc.rhythm_trees else None  # frozen
        self.trees_embed = StemEmbedding(enc.rhythm_trees[3], enc.dim) if enc.rhythm_trees else None
        self.augment = (enc.augment_rotate_deg, enc.augment_warp)  # training only, the patch path only

    def forward(self, series: torch.Tensor, mask: torch.Tensor, series_index: torch.Tensor,
                vectors: torch.Tensor | None = None) -> torch.Tensor:
        """series, mask: (K, L); series_index: (K,); vectors: (K, F) with enc.rhythm_vector -> latents (K, N, D)."""
        if self.scale is None:
            normed = series  # (K, L): the caller z-normalised it
            h, patch_mask = self.encoder(series, mask, series_index)  # (K, P, D), (K, P)
        else:
            normed, mean, std = masked_znormalize(self.patch_view(series, mask), mask)  # (K, L), (K,), (K,)
            h, patch_mask = self.encoder(normed, mask, series_index)  # (K, P, D), (K, P)
            h = h + self.scale(mean, std).to(h.dtype)  # (K, P, D): every patch carries its series' scale
        if self.rhythm is not None:
            if vectors is None:
                raise ValueError("this encoder reads each series' rhythm vector (encoder.rhythm_vector): pass vectors (K, F)")
            h = h + self.rhythm(vectors.to(torch.float32)).to(h.dtype)  # (K, P, D)
        if self.trees is not None:
            h = h + self.trees_embed(self.trees(vectors)).to(h.dtype)  # (K, P, D): the trees' (K, C) log-probs
        feats = None  # (K, F) the stem's features
        if isinstance(self.stem, EcgStem):
            feats = self.stem(normed.float(), mask, vectors.to(torch.float32))[:, -self.stem_width :]  # (K, hidden + labels) or (K, labels)
        elif self.stem is not None:
            feats = self.sample_stem(series, mask)  # (K, labels)
        if feats is not None:
            embed = self.stem_embed if self.stem_embed is not None else self.stem_logit_embed
            h = h + embed(feats).to(h.dtype)  # (K, P, D)
        lat = self.resampler(h, patch_mask)  # (K, N, D)
        if self.stem_latents is not None:
            lat = lat + self.stem_latents(feats).to(lat.dtype)  # (K, N, D): every latent carries the stem's reading
        return lat

    def patch_view(self, series: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(K, L) -> (K, L): the series as the patch path and scale embedding read them. While training with
        encoder.augment_*, each whole window turned and replayed at another speed (model.augment); the stem reads
        the windows as recorded either way."""
        if not self.training or not any(self.augment):
            return series
        C = self.stem.cfg.channels  # the config refuses augment_* without a MiniRocket stem's whole-window rows
        K, L = series.shape
        x = series.reshape(-1, C, L)  # (B, C, L)
        full = mask.reshape(-1, C, L).all(2).all(1)  # (B,)
        return augment_windows(x, full, *self.augment).reshape(K, L)

    def sample_stem(self, series: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """series, mask: (K, L), K = B * C rows, each sample's C axes in order -> (K, labels) the sample's scores per row."""
        C = self.stem.cfg.channels
        K, L = series.shape
        if K % C:  # (exported with K = C x samples, so this holds in the graph)
            raise ValueError(f"this encoder's MiniRocket stem reads {C} series per sample together; got {K} rows, "
                             f"not a multiple of {C}: pass each sample's {C} axes, in order")
        x = series.float().reshape(-1, C, L)  # (B, C, L) as recorded
        m = mask.reshape(-1, C, L).all(1)  # (B, L): samples every axis has
        scores = self.stem(x, m)  # (B, labels)
        return scores[:, None, :].expand(-1, C, -1).reshape(-1, scores.shape[-1])  # (K, labels)


class FlamingoTSLM(TSLMBase):
    def __init__(self, cfg: TSLMConfig, lm: nn.Module, tokenizer, info: BackboneInfo):
        super().__init__(cfg, lm, tokenizer, info)
        base_vocab = add_ts_tokens(tokenizer)
        self.ts_id = tokenizer.convert_tokens_to_ids(TS_TOKEN)
        self.series_encoder = SeriesEncoder(cfg.encoder, cfg.resampler)
        layers = decoder_layers(lm)
        lm_dim = lm.config.hidden_size
        self.insertion = cfg.fusion.insertion_layers(len(layers))
        if cfg.fusion.shared:  # one block, the same module at every insertion point
            block = GatedCrossAttention(lm_dim, cfg.encoder.dim, cfg.fusion)
            self.xattn = nn.ModuleDict({str(i): block for i in self.insertion})
        else:
            self.xattn = nn.ModuleDict({str(i): GatedCrossAttention(lm_dim, cfg.encoder.dim, cfg.fusion) for i in self.insertion})
        self.new_tokens = NewTokenEmbedding(lm.get_input_embeddings(), base_vocab, len(SPECIAL_TOKENS))
        self._hooks = install_fusion_hooks(layers, {i: self.xattn[str(i)] for i in self.insertion})
        self.freeze_backbone()

    # ------------------------------------------------------------------ media
    def encode_media(self, series: torch.Tensor, series_mask: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """series, series_mask: (B, S, L) -> media (B, S * N, D); absent series give zeros (never attended).
        exclude: (B, S, L) bool samples the rhythm vector must not be measured from (TSBatch.series_exclude), or None."""
        B, S, L = series.shape
        check_series_lengths(series_mask, self.cfg.encoder.patch_len)
        present = series_mask.any(-1)  # (B, S)
        b_idx, s_idx = present.nonzero(as_tuple=True)  # (K,), (K,)
        n_lat = self.cfg.resampler.num_latents
        media = series.new_zeros(B, S, n_lat, self.cfg.encoder.dim)  # (B, S, N, D)
        if len(b_idx):
            # (K,) one past each series' last real sample (collate's masks are prefixes; any mask is trimmed safely)
            lengths = (L - series_mask[b_idx, s_idx].flip(-1).int().argmax(-1)).tolist()
            enc = self.series_encoder
            step = self._check_sample_stem(present, lengths)  # rows per encoder call when checkpointing
            for group in length_groups(lengths):  # an ECG and its RR tachogram are not padded to one length
                g = torch.as_tensor(group, device=series.device)
                gb, gs = b_idx[g], s_idx[g]  # (G,), (G,)
                used = max(lengths[k] for k in group)  # trim the group's common padding
                x, m = series[gb, gs, :used], series_mask[gb, gs, :used]  # (G, used)
                e = None if exclude is None else exclude[gb, gs, :used]  # (G, used)
                v = self.rhythm_vectors(x, m, e) if enc.rhythm is not None else None  # (G, F)
                if enc.recomputes():
                    # one checkpoint per series: only its input and its N latents are kept, and the backward
                    # recomputes one series at a time, so the step's memory does not grow with the number of series
                    lat = torch.cat([enc(x[k : k + step], m[k : k + step], gs[k : k + step], None if v is None else v[k : k + step])
                                     for k in range(0, len(group), step)])
                else:
                    lat = enc(x, m, gs, v)  # (G, N, D)
                media = media.index_put((gb, gs), lat.to(media.dtype))
        return media.view(B, S * n_lat, -1)  # (B, S * N, D)

    def _check_sample_stem(self, present: torch.Tensor, lengths: list[int]) -> int:
        """present (B, S); lengths per present series -> rows the encoder must see together (1, or C with a
        MiniRocket stem, which reads a sample's C axes at once and so needs each sample to be its C axes of one length)."""
        C = sample_channels(self.series_encoder)
        if C == 1:
            return 1
        counts = present.sum(-1)  # (B,)
        bad = ((counts != C) & (counts != 0)) | (present[:, :C].sum(-1) != counts)
        if bool(bad.any()):
            b = int(bad.nonzero()[0, 0])
            raise ValueError(f"sample {b} has {int(counts[b])} series; this model's MiniRocket stem reads a window's "
                             f"{C} axes together, so every sample needs exactly {C} series (x, y, z)")
        for i in range(0, len(lengths), C):
            if len(set(lengths[i : i + C])) != 1:
                raise ValueError(f"a sample's axes have lengths {lengths[i : i + C]}; this model's MiniRocket stem reads "
                                 "them together, so they must be the same length")
        return C

    def rhythm_vectors(self, x: torch.Tensor, m: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """x, m: (G, L) series and masks at the model's rate -> (G, F) rhythm vectors, measured in numpy on the real
        samples (less the exclude (G, L) ones' beats). The numbers do not depend on the ECG's gain and offset, so
        normalised and recorded series agree."""
        if not self.cfg.fs > 0:
            raise ValueError("encoder.rhythm_vector measures beats, so the model needs its sampling rate (cfg.fs > 0)")
        excl = None if exclude is None else exclude.detach().cpu().numpy()
        v = series_rhythm_vectors(x.detach().float().cpu().numpy(), m.detach().cpu().numpy(), self.cfg.fs, excl)  # (G, F)
        return torch.from_numpy(v).to(x.device)

    def ts_positions(self, input_ids: torch.Tensor, num_series: int) -> torch.Tensor:
        """Position of each series' <ts> token, (B, S); ABSENT where the sample has fewer series."""
        out = torch.full((input_ids.shape[0], num_series), ABSENT, dtype=torch.long, device=input_ids.device)
        for b in range(input_ids.shape[0]):
            pos = (input_ids[b] == self.ts_id).nonzero()[:, 0]
            if len(pos) > num_series:
                raise ValueError(f"sample {b} has {len(pos)} {TS_TOKEN} tokens but only {num_series} series")
            out[b, : len(pos)] = pos
        return out

    # ------------------------------------------------------------------ LM passes
    def _run(self, input_ids, attention_mask, media, ts_pos, past, start: int, use_cache: bool, positions=None):
        """positions: (B, T) absolute positions when they are not start + arange(T) (the ONNX decoder graph's
        label trie shares one row between branches)."""
        B, T = input_ids.shape
        # arange(T) + start (not arange(start, start + T)) also traces when start is a symbolic size (ONNX export)
        tok_pos = positions if positions is not None else (torch.arange(T, device=input_ids.device) + start)[None].expand(B, -1)  # (B, T)
        allowed = media_allowed(ts_pos, tok_pos, self.cfg.resampler.num_latents)  # (B, T, S * N)
        embeds = self.new_tokens(input_ids, self.lm.get_input_embeddings())  # (B, T, D)
        out = self.decoder()(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            past_key_values=past,
            use_cache=use_cache,
            position_ids=tok_pos,
            **{MEDIA_KWARG: media, ALLOWED_KWARG: allowed},
        )
        return out.last_hidden_state, out.past_key_values

    def hidden_states(self, batch: TSBatch):
        """-> hidden (B, T - P, D) and labels (B, T - P) from position P on, where P is the batch's shared text prefix
        (`shared_prefix`): its positions carry no loss and see no media, so the frozen LM runs them once, not once per
        row, and every row continues from that cache. Exact: the same attention, keys and values as the full pass."""
        media = self.encode_media(batch.series, batch.series_mask, batch.series_exclude)
        ts_pos = self.ts_positions(batch.input_ids, batch.series.shape[1])
        ids, mask = batch.input_ids, batch.attention_mask
        P = self.shared_prefix(batch, ts_pos)
        cache = DynamicCache(config=self.lm.config) if P else None
        if not P or not croppable(cache):  # nothing shared, or a sliding-window layer: the plain pass
            hidden, _ = self._run(ids, mask, media, ts_pos, None, 0, False)
            return hidden, batch.labels
        with torch.no_grad():  # nothing trainable reaches these positions
            _, cache = self._run(ids[:1, :P], mask[:1, :P], media[:1], ts_pos[:1], cache, 0, True)
        cache.batch_repeat_interleave(ids.shape[0])
        hidden, _ = self._run(ids[:, P:], mask, media, ts_pos, cache, P, True)  # (B, T - P, D)
        return hidden, batch.labels[:, P:]

    def shared_prefix(self, batch: TSBatch, ts_pos: torch.Tensor) -> int:
        """How many leading positions (B > 1) every row shares and the loss need not see: the same tokens, all real, before
        every row's first <ts> (no media reaches them) and before the first target's predecessor. A Flamingo ECG batch
        with the number-free text shares 52 of its 66 positions (benchmarks/train_batch_layout.py). 0 where that cannot hold: the LM
        trains (LoRA) or recomputes its layers (activation checkpointing re-runs a layer, which would extend the
        cache twice), or the batch has one row."""
        ids, mask = batch.input_ids, batch.attention_mask
        if ids.shape[0] < 2 or batch.labels is None:
            return 0
        if any(p.requires_grad for p in self.lm.parameters()) or any(getattr(m, "gradient_checkpointing", False) for m in self.lm.modules()):
            return 0
        same = (ids == ids[:1]).all(0) & mask.bool().all(0)  # (T,)
        P = int(same.to(torch.int8).cumprod(0).sum())
        P = min(P, int(ts_pos.min()))
        targets = (batch.labels != IGNORE).any(0).nonzero()  # position t's label is predicted by position t - 1
        if len(targets):
            P = min(P, int(targets[0, 0]) - 1)
        return max(P, 0)

    def prefill(self, batch: TSBatch):
        media = self.encode_media(batch.series, batch.series_mask, batch.series_exclude)
        ts_pos = self.ts_positions(batch.input_ids, batch.series.shape[1])
        ids, mask = batch.input_ids, batch.attention_mask
        B, T = ids.shape
        start, cache, free = 0, None, 0
        if self._prefix is not None and B == 1 and bool(mask.all()):
            free = min(int(ts_pos.min()), T - 1)  # tokens before the first <ts> see no media: their KV is the LM's
            start, cache = self._prefix.lookup(ids[0], free)
        if cache is None:
            start, cache = 0, DynamicCache(config=self.lm.config)
        hidden, cache = self._run(ids[:, start:], mask if start == 0 else None, media, ts_pos, cache, start, True)
        if free:
            self._prefix.store(ids[0, :free], cache)
        return self.head(hidden[:, -1]), DecodeState(cache, T, {"media": media, "ts_pos": ts_pos})

    def decode(self, input_ids: torch.Tensor, state: DecodeState):
        hidden, cache = self._run(
            input_ids, None, state.extras["media"], state.extras["ts_pos"], state.past_key_values, state.length, True
        )
        return self.head(hidden), DecodeState(cache, state.length + input_ids.shape[1], state.extras)
