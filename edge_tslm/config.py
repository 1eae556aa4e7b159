"""Frozen config dataclasses, one per component, saved in every artifact so a directory alone rebuilds its model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class EncoderConfig:
    """PatchEncoder: non-overlapping patches of a z-normalised series -> embeddings."""

    patch_len: int = 4
    dim: int = 256
    conv_layers: int = 2  # residual Conv1d(k=5) layers over patches: local context at any length
    max_series: int = 16  # series identity embeddings (a sample may hold up to this many series)
    dropout: float = 0.0
    # The encoder takes the series as recorded, z-normalises it itself and adds an embedding of each series' mean and
    # std to its patches (model.encoder.ScaleEmbedding): the numbers a "full"/"short" description writes as text reach
    # the resampler as a vector instead, so the text can drop them (series_text="none") and a stream prefills fewer
    # tokens per window.
    scale_token: bool = False
    # Each series is an ECG lead whose measured rhythm and beat shape (edge_tslm.rhythm_vector: 30 RR statistics, 6
    # beat-shape numbers) reach its patches as one more embedding (model.encoder.VectorEmbedding), beside the text.
    rhythm_vector: bool = False
    # A small CNN over the whole ECG, trained before the TSLM as a rhythm classifier (model.ecg_stem.EcgStem; its head
    # reads the rhythm vector too): its hidden features and label logits reach the patches through a zero-initialised
    # projection. Frozen while the TSLM trains (training/pretrain_ecg_stem.py trains it). Needs rhythm_vector.
    ecg_stem: bool = False
    # With ecg_stem: the encoder reads only the stem's label logits, not its hidden layer. The logits mean the same in
    # every stem trained for the task, so out-of-fold stems (training/pretrain_ecg_stem.py --cross-fit) can stand in
    # for it while training; the hidden units of separately trained stems are not the same units (session 23).
    stem_logits_only: bool = False
    # MiniRocket over all axes of a window with a ridge head, fitted before the TSLM (model.minirocket_stem): its score
    # per label reaches every patch of every axis through a zero-initialised projection. Frozen while the TSLM trains
    # (training/pretrain_minirocket_stem.py fits it). Reads the window as recorded, so it needs scale_token; a sample's
    # series must be the stem's axes, in order, of one length.
    minirocket_stem: bool = False
    # With a stem: its embedding is also added to every resampler latent (a second zero-initialised projection), so
    # the fusion blocks read the stem directly, past the patch dropout and the resampler's mixing.
    stem_at_latents: bool = False
    # While training only, the patch path (and scale embedding) reads each window turned by up to this many degrees
    # about a random axis and replayed up to this fraction faster or slower (model.augment); the MiniRocket stem reads
    # it as recorded. Needs minirocket_stem (whole 3-axis windows). Like dropout, no effect at inference.
    augment_rotate_deg: float = 0.0
    augment_warp: float = 0.0
    # Gradient-boosted trees over the rhythm vector, fitted before the TSLM (model.rhythm_trees; training/
    # pretrain_rhythm_trees.py): their label log-probabilities reach the patches through a zero-initialised
    # projection, beside the CNN stem's. (trees, nodes per tree, depth, labels), the shape of the frozen buffers;
    # empty for none. Needs rhythm_vector.
    rhythm_trees: tuple[int, ...] = ()


@dataclass(frozen=True)
class ResamplerConfig:
    """PerceiverResampler: any number of patches -> a fixed set of latents."""

    num_latents: int = 64
    depth: int = 2
    heads: int = 4
    dim_head: int = 64
    ff_mult: int = 2


@dataclass(frozen=True)
class FusionConfig:
    """Gated cross-attention blocks inserted before every k-th decoder layer (Flamingo)."""

    every_k: int = 8
    start_frac: float = 0.0  # > 0: blocks at start, start + k, ... with start = int(start_frac * num_layers)
    heads: int = 4
    dim_head: int = 64
    ff_mult: int = 1
    layers: tuple[int, ...] | None = None  # explicit insertion indices override every_k
    shared: bool = False  # one block reused at every insertion point (edge_tslm.quantize.share_xattn_)

    def insertion_layers(self, num_layers: int) -> tuple[int, ...]:
        """Layers whose input passes through a gated cross-attention block."""
        if self.layers is not None:
            bad = [i for i in self.layers if not 0 <= i < num_layers]
            if bad:
                raise ValueError(f"fusion.layers {bad} outside 0..{num_layers - 1}")
            return tuple(sorted(set(self.layers)))
        if self.every_k < 1:
            raise ValueError(f"fusion.every_k must be >= 1, got {self.every_k}")
        if self.start_frac > 0:
            return tuple(range(int(self.start_frac * num_layers), num_layers, self.every_k))
        return tuple(i for i in range(num_layers) if (i + 1) % self.every_k == 0) or (num_layers - 1,)


def parse_fusion_layers(text: str) -> tuple[int, ...] | None:
    """A --fusion-layers flag, "25,27,29" -> (25, 27, 29); "" -> None (the every_k/start_frac default). Parsed
    before any model is built, so a typo is refused before minutes of loading."""
    if not text.strip():
        return None
    try:
        layers = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"fusion layers {text!r} must be decoder layer indices separated by commas, e.g. 25,27,29") from None
    if any(i < 0 for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"fusion layers {text!r} must be distinct non-negative layer indices, e.g. 25,27,29")
    return tuple(sorted(layers))


@dataclass(frozen=True)
class SoftPromptConfig:
    """SoftPrompt: PatchEncoder -> TransformerEncoder -> MLP projector -> tokens spliced into the LM input."""

    encoder_layers: int = 2
    heads: int = 4
    ff_mult: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TSLMConfig:
    """Everything needed to rebuild a TSLM around a named, checksummed backbone."""

    variant: Literal["flamingo", "softprompt"] = "flamingo"
    backbone: str = "smollm2-135m"
    backbone_sha256: str = ""
    chat_format: bool = True  # wrap the prompt in the backbone's chat template when it has one
    train_token_rows: bool = True  # train the <ts>/<endofchunk> rows (makes the backward reach layer 0)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    # Default: 3 blocks in the upper half (layers 15, 20, 25 of SmolLM2's 30): the backward pass of a
    # frozen LM then stops halfway down, which is what makes CPU training affordable.
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(every_k=5, start_frac=0.5))
    softprompt: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    labels: tuple[str, ...] = ()  # the task's allowed answers, when trained for one
    task: str = ""
    pre_prompt: str = ""
    fs: float = 0.0  # sampling rate the model was trained at (0: as given); inputs are resampled to it
    max_seconds: float = 0.0  # longest span the model was trained on (0: no limit); longer inputs are cropped
    series_features: str = ""  # measured numbers added to each series' description ("rr": ECG rate + RR irregularity)
    question_first: bool = False  # the question before the series (a stream's runtime caches it with the prompt head)
    series_text: str = "full"  # how each series is described: "full", "short" or "none" (prompts.SERIES_TEXTS)
    # one decision offset per label, added to its log-likelihood in classify (edge_tslm.calibration; `edge-tslm calibrate`)
    label_offsets: tuple[float, ...] = ()
    # The token every training target ended with (the tokenizer's eos when it trained), which classify scores after
    # each label. "" : not recorded (adapters trained before it was): a tokenizer whose eos differs then goes unnoticed.
    answer_end_token: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TSLMConfig":
        parts = {
            "encoder": EncoderConfig,
            "resampler": ResamplerConfig,
            "fusion": FusionConfig,
            "softprompt": SoftPromptConfig,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config.json has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            if k in parts:
                kwargs[k] = _build(parts[k], v)
            elif isinstance(v, list):
                kwargs[k] = tuple(v)
            else:
                kwargs[k] = v
        return cls(**kwargs)

    def __post_init__(self) -> None:
        from edge_tslm.prompts import SERIES_FEATURES, SERIES_TEXTS  # a bad config.json fails on load, not mid-stream

        if self.series_features not in SERIES_FEATURES:
            raise ValueError(f"series_features {self.series_features!r} is unknown; use one of {SERIES_FEATURES}")
        if self.series_features == "rr_series" and (self.task.startswith("har") or self.task.startswith("tsqa")):
            raise ValueError(
                f"series_features \"rr_series\" adds the RR intervals of an ECG, but this model's task is {self.task!r}: "
                "use it for an ECG task (ecg_rhythm), or leave series_features empty"
            )
        if self.label_offsets and len(self.label_offsets) != len(self.labels):
            raise ValueError(
                f"label_offsets has {len(self.label_offsets)} values for {len(self.labels)} labels {list(self.labels)}: "
                "give one per label, or refit them with `edge-tslm calibrate`"
            )
        if self.series_text not in SERIES_TEXTS:
            raise ValueError(f"series_text {self.series_text!r} is unknown; use one of {SERIES_TEXTS}")
        if self.encoder.scale_token and self.variant != "flamingo":
            raise ValueError("encoder.scale_token is a Flamingo encoder option; a SoftPrompt model reads the scale as text")
        if self.encoder.rhythm_vector:
            if self.variant != "flamingo":
                raise ValueError("encoder.rhythm_vector is a Flamingo encoder option; a SoftPrompt model has no series encoder to add it to")
            if self.task.startswith("har") or self.task.startswith("tsqa") or self.series_features == "rr_series":
                raise ValueError(
                    f"encoder.rhythm_vector measures every series as an ECG lead, but this model's task is {self.task!r} "
                    f"with series_features {self.series_features!r}: use it for an ECG task whose series are all leads "
                    "(ecg_rhythm without rr_series), or build the model without it"
                )
        if self.encoder.ecg_stem and not self.encoder.rhythm_vector:
            raise ValueError(
                "encoder.ecg_stem's head reads the rhythm vector, so it needs encoder.rhythm_vector=True "
                "(pass --rhythm-vector with --ecg-stem)"
            )
        if self.encoder.rhythm_trees:
            if len(self.encoder.rhythm_trees) != 4 or min(self.encoder.rhythm_trees) < 1:
                raise ValueError(f"encoder.rhythm_trees is (trees, nodes, depth, labels), four positive numbers; got "
                                 f"{self.encoder.rhythm_trees}: take it from training/pretrain_rhythm_trees.py's trees file")
            if not self.encoder.rhythm_vector:
                raise ValueError("encoder.rhythm_trees read the rhythm vector, so they need encoder.rhythm_vector=True "
                                 "(pass --rhythm-vector with --rhythm-trees)")
            if self.labels and self.encoder.rhythm_trees[3] != len(self.labels):
                raise ValueError(f"encoder.rhythm_trees score {self.encoder.rhythm_trees[3]} labels, but this model has "
                                 f"{len(self.labels)} {list(self.labels)}: fit the trees on this task's labels")
        if self.encoder.stem_logits_only and not self.encoder.ecg_stem:
            raise ValueError("encoder.stem_logits_only picks which of the ECG stem's outputs the encoder reads, but this "
                             "encoder has no ECG stem: build it with encoder.ecg_stem (--ecg-stem), or leave it out")
        if self.encoder.stem_at_latents and not (self.encoder.ecg_stem or self.encoder.minirocket_stem):
            raise ValueError("encoder.stem_at_latents adds a stem's embedding to the latents, but this encoder has no stem: "
                             "build it with encoder.ecg_stem or encoder.minirocket_stem (--ecg-stem / --minirocket-stem)")
        if (self.encoder.augment_rotate_deg or self.encoder.augment_warp) and not self.encoder.minirocket_stem:
            raise ValueError("encoder.augment_rotate_deg / augment_warp turn and warp whole 3-axis windows, which only an "
                             "encoder with a MiniRocket stem receives as such: build it with encoder.minirocket_stem "
                             "(--minirocket-stem), or leave the augmentation out")
        if not 0.0 <= self.encoder.augment_rotate_deg <= 180.0 or not 0.0 <= self.encoder.augment_warp < 0.5:
            raise ValueError(f"encoder.augment_rotate_deg must be in [0, 180] and augment_warp in [0, 0.5); got "
                             f"{self.encoder.augment_rotate_deg} and {self.encoder.augment_warp}")
        if self.encoder.minirocket_stem:
            if self.encoder.ecg_stem:
                raise ValueError("encoder.ecg_stem and encoder.minirocket_stem are two stems for the one slot; pick one")
            if not self.encoder.scale_token:
                raise ValueError(
                    "encoder.minirocket_stem reads each window as recorded (its biases and ridge head were fitted in the "
                    "data's units), so it needs encoder.scale_token=True (pass --scale-token with --minirocket-stem)"
                )
            if self.variant != "flamingo":
                raise ValueError("encoder.minirocket_stem is a Flamingo encoder option; a SoftPrompt model has no series encoder")
        if self.series_text == "none" and not self.encoder.scale_token:
            raise ValueError(
                'series_text "none" leaves each series\' mean and std out of the text, so only a model whose encoder reads '
                "them (encoder.scale_token=True) may use it; pick \"full\" or \"short\", or build the model with encoder.scale_token"
            )

    def check_answer_end_token(self, eos_token: str | None, source: str) -> None:
        """Refuse a tokenizer that ends answers with another token than the one this model learned to end them with:
        classify would score every label with a token the model gives almost no probability."""
        if self.answer_end_token and eos_token != self.answer_end_token:
            raise ValueError(
                f"this model was trained to end each answer with {self.answer_end_token!r}, but the tokenizer from "
                f"{source} ends answers with {eos_token!r}: classify would score the wrong end token. Load the tokenizer "
                "the model was trained with (the backbone its config names), or retrain on this one"
            )

    def replace(self, **changes: Any) -> "TSLMConfig":
        return dataclasses.replace(self, **changes)


def _build(kind: type, d: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{kind.__name__} has unknown keys {sorted(unknown)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
