"""The prompt side of the torch-free runtime: an exported ``tokenizer/`` directory read with ``tokenizers`` only.

It reproduces ``edge_tslm.model.batch`` (render_prompt, encode_prompt, encode_target) without transformers, so
the ONNX backend feeds the fused decoder exactly the ids the torch model would see:

* the chat template (``chat_template.jinja`` or ``tokenizer_config.json["chat_template"]``) is rendered with
  ``jinja2`` when it is installed (a small pure-Python package; the sandboxed environment and the options
  transformers uses), else — only for a ChatML template such as SmolLM2's — by a built-in ChatML renderer;
* exactly one BOS where the backbone expects one (the same test as ``batch.encode_prompt``);
* targets end with the tokenizer's eos token (``batch.encode_target``);
* decoding skips special tokens and applies transformers' ``clean_up_tokenization_spaces`` when the config asks.

Imports: json, re, and ``tokenizers`` (plus ``jinja2`` when present). No torch, no transformers.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Tokenizer

__all__ = ["PromptTokenizer", "DEFAULT_SYSTEM", "render_chatml", "is_chatml"]

# batch.render_prompt's system message when the config gives none (kept equal to it; tests compare the ids).
DEFAULT_SYSTEM = "You read time series and answer questions about them."
SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token")


def _token_str(value: Any) -> str | None:
    """tokenizer_config.json keeps a special token as a string or as an AddedToken dict ({"content": ...})."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def is_chatml(template: str) -> bool:
    """A ChatML template (``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, ``<|im_start|>assistant\\n`` to
    open the answer), as SmolLM2 ships: the only kind the built-in renderer stands in for."""
    sq = re.sub(r"\s+|\\n", "", template).replace('"', "'")
    needed = ("'<|im_start|>'+message['role']", "message['content']+'<|im_end|>'", "<|im_start|>assistant", "add_generation_prompt")
    return all(n in sq for n in needed)


def render_chatml(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """ChatML without jinja: what a ChatML template renders when the first message is the system prompt."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _jinja_renderer(template: str):
    """Compile ``template`` the way transformers does (sandboxed, trim_blocks, lstrip_blocks, its helpers)."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


class PromptTokenizer:
    """Token ids of prompts and answers for an exported artifact's ``tokenizer/`` directory."""

    def __init__(self, directory: str | Path, *, use_jinja: bool | None = None) -> None:
        """use_jinja: None renders with jinja2 when it is importable; False forces the built-in ChatML renderer."""
        d = Path(directory)
        if not (d / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{d / 'tokenizer.json'} is missing; export the model with its decoder (--decoder)")
        self.directory = d
        self.tk = Tokenizer.from_file(str(d / "tokenizer.json"))
        cfg_path = d / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        self.special: dict[str, str] = {}
        for name in SPECIAL_NAMES:
            tok = _token_str(self.config.get(name))
            if tok is not None:
                self.special[name] = tok
        self.bos_token_id = self._id(self.special.get("bos_token"))
        self.eos_token_id = self._id(self.special.get("eos_token"))
        self.pad_token_id = self._id(self.special.get("pad_token"))
        template_file = d / "chat_template.jinja"
        tmpl = template_file.read_text() if template_file.is_file() else self.config.get("chat_template")
        if isinstance(tmpl, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, dict)}
            tmpl = named.get("default")
        self.chat_template: str | None = tmpl or None
        self.clean_up_spaces = bool(self.config.get("clean_up_tokenization_spaces", False))
        # batch.encode_prompt's rule: the backbone wants a BOS when tokenising "a" starts with one.
        self.wants_bos = self.bos_token_id is not None and self.tk.encode("a").ids[:1] == [self.bos_token_id]
        self._render = None
        self.renderer = "none"
        if self.chat_template:
            if use_jinja is not False:
                try:
                    self._render = _jinja_renderer(self.chat_template).render
                    self.renderer = "jinja2"
                except ImportError:
                    if use_jinja:
                        raise
            if self._render is None:
                if not is_chatml(self.chat_template):
                    raise ImportError(
                        f"{d}: the chat template is not ChatML, and rendering it needs jinja2: pip install jinja2"
                    )
                self.renderer = "chatml"

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.tk.token_to_id(token)

    def token_id(self, token: str) -> int:
        i = self.tk.token_to_id(token)
        if i is None:
            raise KeyError(f"{token!r} is not in {self.directory / 'tokenizer.json'}")
        return i

    # ---------------------------------------------------------------- batch.render_prompt / encode_prompt
    def render(self, text: str, chat_format: bool = True, system: str = "") -> str:
        if not (chat_format and self.chat_template):
            return text
        msgs = [{"role": "system", "content": system or DEFAULT_SYSTEM}, {"role": "user", "content": text}]
        if self._render is not None:
            return self._render(messages=msgs, add_generation_prompt=True, **self.special)
        return render_chatml(msgs, add_generation_prompt=True)

    def encode_prompt(self, rendered: str) -> list[int]:
        ids = self.tk.encode(rendered, add_special_tokens=False).ids
        if self.wants_bos and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id] + ids
        return ids

    def prompt_ids(self, text: str, *, chat_format: bool = True, system: str = "") -> list[int]:
        """The ids ``batch.collate`` builds for one sample's text (no padding)."""
        return self.encode_prompt(self.render(text, chat_format, system))

    def encode_text(self, text: str) -> list[int]:
        """Plain text as ids, no special tokens (text a stream writes into a generation)."""
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_target(self, target: str) -> list[int]:
        if self.eos_token_id is None:
            raise ValueError(f"{self.directory}: the tokenizer has no eos_token; classify needs one to end an answer")
        return self.tk.encode(target, add_special_tokens=False).ids + [self.eos_token_id]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text = self.tk.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up_tokenization(text) if self.clean_up_spaces else text


def _clean_up_tokenization(s: str) -> str:
    """transformers' clean_up_tokenization (applied when tokenizer_config asks for it)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        s = s.replace(a, b)
    return s
