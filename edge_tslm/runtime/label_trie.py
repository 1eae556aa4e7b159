"""Label answers as a token trie, and the two ways to score them.

``full``: the log-likelihood of each label's answer tokens (``Answer: <label><eos>``) over the whole vocabulary;
the number every F1 in benchmarks/results up to session 13 was measured with.

``labels``: the probability of each label given that the answer is one of the labels: at every token where the
labels part ways, a softmax over the tokens that continue some label (the probability constrained decoding
assigns). Tokens every remaining label shares score 0, so they need no logits, and only the branching prefixes and
their ancestors are fed to the decoder: for HAR 3 tokens instead of 10, and 2 logit rows over 7 tokens instead of
11 rows over the 49,152-token vocabulary. exp(scores) sums to 1 over the labels when no label's answer is a prefix of
another's (each ends with eos).

numpy only: the ONNX runtime and the torch model share it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

SCORINGS = ("full", "labels")

Prefix = tuple[int, ...]


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"label scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def children(conts: Sequence[Sequence[int]]) -> dict[Prefix, list[int]]:
    """Every proper prefix of a continuation -> the distinct tokens that follow it (in first-seen order)."""
    out: dict[Prefix, list[int]] = {}
    for c in conts:
        for i in range(len(c)):
            nxt = out.setdefault(tuple(c[:i]), [])
            if int(c[i]) not in nxt:
                nxt.append(int(c[i]))
    return out


def branching(conts: Sequence[Sequence[int]]) -> list[Prefix]:
    """The prefixes where the labels part ways (two or more next tokens), shortest first."""
    return sorted((p for p, nxt in children(conts).items() if len(nxt) > 1), key=lambda q: (len(q), q))


def branch_tokens(conts: Sequence[Sequence[int]]) -> list[int]:
    """Every token that follows a branching prefix: the vocabulary rows ``labels`` scoring reads (sorted)."""
    nxt = children(conts)
    return sorted({t for p in branching(conts) for t in nxt[p]})


class LabelTrie:
    """Prefixes fed to the decoder as one row after the prompt: each node is a non-empty prefix, fed as its last
    token, seeing the prompt and its own ancestors only.

    ``LabelTrie.for_scoring(conts, "full")`` feeds every proper prefix (each label token gets its logits);
    ``"labels"`` feeds only the branching prefixes and their ancestors."""

    def __init__(self, prefixes: Sequence[Prefix]) -> None:
        self.node_of: dict[Prefix, int] = {}
        self.tokens: list[int] = []  # node -> its token
        self.depth: list[int] = []  # node -> 0-based depth (its position after the prompt)
        self.parent: list[int] = []  # node -> parent node (-1: the prompt's last token)
        for p in sorted(set(prefixes), key=lambda q: (len(q), q)):
            for i in range(1, len(p) + 1):  # ancestors first
                key = tuple(p[:i])
                if key not in self.node_of:
                    self.node_of[key] = len(self.tokens)
                    self.tokens.append(int(key[-1]))
                    self.depth.append(i - 1)
                    self.parent.append(self.node_of.get(key[:-1], -1))

    @classmethod
    def for_scoring(cls, conts: Sequence[Sequence[int]], scoring: str) -> "LabelTrie":
        if check_scoring(scoring) == "full":
            return cls([tuple(c[:i]) for c in conts for i in range(1, len(c))])
        return cls([p for p in branching(conts) if p])

    def mask(self) -> np.ndarray:
        """(n, n) bool: node i sees node j iff j is i or one of its ancestors."""
        n = len(self.tokens)
        m = np.eye(n, dtype=bool)
        for i in range(n):
            j = self.parent[i]
            while j >= 0:
                m[i, j] = True
                j = self.parent[j]
        return m

    def row_of(self, prefix: Prefix) -> int:
        """The logit row that scores what follows ``prefix``: -1 for the prompt's last token, else its node."""
        return -1 if not prefix else self.node_of[prefix]


def full_scores(conts: Sequence[Sequence[int]], lp_of: Mapping[Prefix, np.ndarray]) -> np.ndarray:
    """log p of each continuation over the vocabulary: lp_of[prefix] is the (V,) log-softmax after that prefix."""
    return np.array([sum(float(lp_of[tuple(c[:i])][c[i]]) for i in range(len(c))) for c in conts], np.float64)


def label_scores(conts: Sequence[Sequence[int]], logits_of: Mapping[Prefix, Mapping[int, float]]) -> np.ndarray:
    """log p(label | the answer is a label): logits_of[prefix][token] for each branching prefix and each token that
    follows it (other logits are not needed)."""
    nxt = children(conts)
    lse = {}
    for p, toks in nxt.items():
        if len(toks) > 1:
            v = np.array([logits_of[p][t] for t in toks], np.float64)
            m = v.max()
            lse[p] = m + np.log(np.exp(v - m).sum())
    out = np.zeros(len(conts), np.float64)
    for k, c in enumerate(conts):
        for i in range(len(c)):
            p = tuple(c[:i])
            if p in lse:
                out[k] += float(logits_of[p][c[i]]) - lse[p]
    return out
