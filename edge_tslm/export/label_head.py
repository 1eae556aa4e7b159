"""Give a decoder graph a label head: logits over a few vocabulary rows baked into the graph.

A streamed classify call needs logits only for the tokens where the artifact's labels part ways ("labels" scoring,
edge_tslm.runtime.label_trie): 7 rows for HAR, 4 for ECG. The lm_head over all 49,152 rows cost 12.2 of the HAR
upper half's 49.3 ms per decision on the 2-core AVX2 host (benchmarks/results/classify_profile.md). This adds

    label_logits (B, K2, J) = Gather(h, label_index, axis=1) @ Gather(R^T, label_token_index, axis=1)

beside the lm_head, where h is the final-norm hidden state the lm_head reads and R the (J0, D) rows of the lm_head's
own weights (dequantized from MatMulNBits when the lm_head is quantized) for the baked token ids, which the graph's
metadata lists. The lm_head is untouched: a call that passes an empty logit_index runs it over no rows.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from edge_tslm.export import spec

ROWS_INIT = "label_head.rows_t"  # (D, J0) float32


def _attr(node, name: str, default: Any = None) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def lm_head_rows(graph, node, token_ids: Sequence[int]) -> np.ndarray:
    """(J, D) float32: the lm_head's weight rows for ``token_ids``, as the node computes with them."""
    from onnx import numpy_helper

    from edge_tslm.export.compact import dequantize_matmul_nbits

    inits = {t.name: t for t in graph.initializer}
    ids = np.asarray(token_ids, np.int64)
    if node.op_type == "MatMulNBits":
        packed = numpy_helper.to_array(inits[node.input[1]])  # (N, K/bs, blob)
        scales = numpy_helper.to_array(inits[node.input[2]])
        zp = numpy_helper.to_array(inits[node.input[3]]) if len(node.input) > 3 and node.input[3] else None
        K, bits = int(_attr(node, "K")), int(_attr(node, "bits"))
        kb = packed.shape[1]
        z = None if zp is None else (zp.reshape(packed.shape[0], -1)[ids] if zp.dtype.kind != "f" else zp.reshape(-1, kb)[ids])
        return np.ascontiguousarray(dequantize_matmul_nbits(packed[ids], scales.reshape(-1, kb)[ids], z, K, bits).T)
    if node.op_type == "MatMul" and node.input[1] in inits:
        w = numpy_helper.to_array(inits[node.input[1]])  # (D, V)
        return np.ascontiguousarray(w[:, ids].T.astype(np.float32))
    raise ValueError(f"the lm_head node {node.name} is a {node.op_type} over a non-constant weight; no label head added")


def add_label_head(model, token_ids: Sequence[int]) -> dict[str, Any] | None:
    """Add the label head to a decoder ModelProto (in place; its initializers loaded). None when the graph has no
    ``logits`` output computed from a Gather of rows (``logit_index``) of the hidden states (nothing to add to)."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    if not token_ids or spec.DEC_LABEL_LOGITS in {o.name for o in g.output}:
        return None
    producer = {o: n for n in g.node for o in n.output}
    head = producer.get(spec.DEC_LOGITS)
    pick = producer.get(head.input[0]) if head is not None else None
    if pick is None or pick.op_type != "Gather" or int(_attr(pick, "axis", 0)) != 1:  # the rows at logit_index
        return None
    rows = lm_head_rows(g, head, token_ids)  # (J0, D)
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(rows.T), ROWS_INIT))  # (D, J0)
    g.input.extend([
        helper.make_tensor_value_info(spec.DEC_LABEL_INDEX, TensorProto.INT64, ["label_rows"]),
        helper.make_tensor_value_info(spec.DEC_LABEL_TOKENS, TensorProto.INT64, ["label_tokens"]),
    ])
    hid, w = "label_head/hidden", "label_head/weight"
    g.node.extend([
        helper.make_node("Gather", [pick.input[0], spec.DEC_LABEL_INDEX], [hid], name="label_head/gather_rows", axis=1),
        helper.make_node("Gather", [ROWS_INIT, spec.DEC_LABEL_TOKENS], [w], name="label_head/gather_tokens", axis=1),
        helper.make_node("MatMul", [hid, w], [spec.DEC_LABEL_LOGITS], name="label_head/matmul"),  # (B, K2, J)
    ])
    logits = next(o for o in g.output if o.name == spec.DEC_LOGITS)
    batch = logits.type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info(spec.DEC_LABEL_LOGITS, TensorProto.FLOAT, ["batch", "label_rows", "label_tokens"])
    if batch.dim_param or batch.dim_value:
        out.type.tensor_type.shape.dim[0].CopyFrom(batch)
    g.output.append(out)
    entry = model.metadata_props.add()
    entry.key, entry.value = spec.LABEL_HEAD_META, json.dumps([int(t) for t in token_ids])
    return {"token_ids": [int(t) for t in token_ids], "lm_head": f"{head.op_type} {head.name}", "rows_dtype": "float32"}


def label_head_tokens(tokenizer_encode_target, labels: Sequence[str]) -> list[int]:
    """The tokens ``labels`` scoring reads for these labels: every token that follows a prefix where their answers
    part ways. tokenizer_encode_target: str -> token ids ending with eos (the runtime's or the model's)."""
    from edge_tslm.constants import ANSWER_PREFIX
    from edge_tslm.runtime.label_trie import branch_tokens

    return branch_tokens([tokenizer_encode_target(f"{ANSWER_PREFIX} {lab}") for lab in labels])
