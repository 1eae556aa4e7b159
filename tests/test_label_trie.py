"""Label scoring over a token trie (edge_tslm.runtime.label_trie): which prefixes a call feeds, and both scores."""

from __future__ import annotations

import numpy as np
import pytest

from edge_tslm.runtime.label_trie import (
    LabelTrie,
    branch_tokens,
    branching,
    check_scoring,
    children,
    full_scores,
    label_scores,
    log_softmax,
)

A, C, EOS = 1, 2, 0  # 'Answer', ':', eos
WALK, UP, DOWN, STAIRS, SIT, LIE = 10, 11, 12, 13, 14, 15
HAR = [[A, C, WALK, EOS], [A, C, WALK, UP, STAIRS, EOS], [A, C, WALK, DOWN, STAIRS, EOS], [A, C, SIT, EOS], [A, C, LIE, EOS]]


def test_branching_prefixes_and_their_tokens():
    assert branching(HAR) == [(A, C), (A, C, WALK)]
    assert branch_tokens(HAR) == sorted([WALK, SIT, LIE, EOS, UP, DOWN])
    assert children(HAR)[(A, C, WALK, UP)] == [STAIRS]


def test_labels_scoring_feeds_only_branching_prefixes_and_their_ancestors():
    full, lab = LabelTrie.for_scoring(HAR, "full"), LabelTrie.for_scoring(HAR, "labels")
    assert len(full.tokens) == 9  # every proper prefix: A, C, WALK, SIT, LIE, UP, DOWN, STAIRS twice (two branches)
    assert lab.tokens == [A, C, WALK] and lab.depth == [0, 1, 2] and lab.parent == [-1, 0, 1]
    assert lab.row_of(()) == -1 and lab.row_of((A, C, WALK)) == 2
    m = full.mask()
    up, down = full.node_of[(A, C, WALK, UP)], full.node_of[(A, C, WALK, DOWN, STAIRS)]
    assert not m[down, up] and m[down, full.node_of[(A, C, WALK, DOWN)]]  # a branch sees its ancestors only


def test_label_scores_are_the_constrained_distribution():
    rng = np.random.default_rng(0)
    V = 20
    after = {p: rng.standard_normal(V) for p in children(HAR)}  # logits after every prefix
    got = label_scores(HAR, {p: {t: after[p][t] for t in nxt} for p, nxt in children(HAR).items()})
    assert np.isclose(np.exp(got).sum(), 1.0)
    # by hand: softmax over the allowed tokens at every step, 1 where a single token is allowed
    def restricted(p, t):
        toks = children(HAR)[p]
        return after[p][t] - np.log(np.exp(after[p][toks]).sum())
    want = [sum(restricted(tuple(c[:i]), c[i]) for i in range(len(c))) for c in HAR]
    np.testing.assert_allclose(got, want, atol=1e-12)
    full = full_scores(HAR, {p: log_softmax(v) for p, v in after.items()})
    assert (full < got).all()  # the full likelihood also pays for tokens outside the labels


def test_one_label_and_unknown_scoring():
    assert branching([[A, C, SIT, EOS]]) == [] and label_scores([[A, C, SIT, EOS]], {}) == pytest.approx([0.0])
    with pytest.raises(ValueError, match="full"):
        check_scoring("softmax")
