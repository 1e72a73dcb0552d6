"""GPT-2 as an ONNX graph, `tokens[batch, seq] (int64) -> logits[batch, seq, n_vocab] (float32)`.

The graph is written node by node with `onnx.helper` from our parameters rather than traced
through jax2tf + tf2onnx: the model is small and fixed, and building it directly leaves no
converter between our weights and the runtime (opset 20 has `LayerNormalization` and
`Gelu(approximate="tanh")`, GPT-2's two non-elementary ops). Batch and sequence length are
dynamic (`batch`, `seq`, up to n_ctx); positions are 0..seq-1 (no KV cache: one full forward).
The causal mask is a precomputed [n_ctx, n_ctx] additive table sliced to [seq, seq]. Logits
cover the real vocabulary only (our padding rows are not exported).

Output is a directory holding `model.onnx`; above ~1.8 GB of weights (gpt2-large and up) they
go to `model.onnx.data` beside it (ONNX's external data), because one protobuf is capped at 2 GiB.

References:
  ONNX operator specs (opset 20): LayerNormalization, Gelu, MatMul, Softmax, Split, Trilu.
  Radford et al. 2019 / openai/gpt-2 src/model.py (the computation).
"""

from __future__ import annotations

import pathlib

import numpy as np

from gpt2_jax.config import ModelConfig
from gpt2_jax.export.names import check_dtype, check_params_match, check_standard, to_numpy
from gpt2_jax.export.output import atomic_output

OPSET = 20
MODEL_FILE = "model.onnx"
_EXTERNAL_ABOVE = 1_800_000_000  # bytes of weights; protobuf's hard limit is 2 GiB


def build(config: ModelConfig, params) -> "onnx.ModelProto":  # noqa: F821
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p = to_numpy(params)
    D, N, H, V = config.n_embd, config.n_head, config.head_dim, config.n_vocab
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.array(value, order="C"), name))  # (ascontiguousarray makes scalars 1-D)
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def layer_norm(x: str, scale, bias, name: str) -> str:
        return node("LayerNormalization", [x, const(f"{name}.g", scale), const(f"{name}.b", bias)], name,
                    axis=-1, epsilon=config.layer_norm_epsilon)

    def linear(x: str, kernel, bias, name: str) -> str:  # x[..., in] @ kernel[in, out] + bias
        y = node("MatMul", [x, const(f"{name}.w", kernel)], f"{name}.mm")
        return node("Add", [y, const(f"{name}.b", bias)], name)

    # embeddings: wte[tokens] + wpe[0..T-1]
    wte = p["wte"]["embedding"][:V]
    const("wte", wte)
    seq = node("Gather", [node("Shape", ["tokens"], "shape"), const("one_i64", np.array(1, np.int64))], "seq")
    positions = node("Range", [const("zero_i64", np.array(0, np.int64)), seq, "one_i64"], "positions")
    x = node("Add", [node("Gather", ["wte", "tokens"], "tok_emb"),
                     node("Gather", [const("wpe", p["wpe"]["embedding"]), positions], "pos_emb")], "emb")
    # causal mask [T, T]: 0 on and below the diagonal, float32 min above (as in model.GPT)
    table = np.triu(np.full((config.n_ctx, config.n_ctx), np.finfo(np.float32).min, np.float32), k=1)
    seq_1d = node("Unsqueeze", [seq, const("axis0", np.array([0], np.int64))], "seq_1d")
    zeros2 = const("zeros2", np.zeros(2, np.int64))
    mask = node("Slice", [const("causal_table", table), zeros2, node("Concat", [seq_1d, seq_1d], "seq_2d", axis=0),
                          const("axes01", np.array([0, 1], np.int64))], "causal")
    heads = const("heads_shape", np.array([0, 0, N, H], np.int64))
    merged = const("merged_shape", np.array([0, 0, D], np.int64))
    splits = const("qkv_split", np.array([D, D, D], np.int64))
    scale = const("attn_scale", np.array(1.0 / np.sqrt(H), np.float32))

    h = p["h"]
    for i in range(config.n_layer):
        n = f"h{i}"
        a = layer_norm(x, h["ln_1"]["scale"][i], h["ln_1"]["bias"][i], f"{n}.ln_1")
        qkv = linear(a, h["attn"]["c_attn"]["kernel"][i], h["attn"]["c_attn"]["bias"][i], f"{n}.c_attn")  # [B, T, 3D]
        nodes.append(helper.make_node("Split", [qkv, splits], [f"{n}.q", f"{n}.k", f"{n}.v"], axis=-1, name=f"{n}.split"))
        q = node("Transpose", [node("Reshape", [f"{n}.q", heads], f"{n}.q4")], f"{n}.qt", perm=[0, 2, 1, 3])  # [B, N, T, H]
        k = node("Transpose", [node("Reshape", [f"{n}.k", heads], f"{n}.k4")], f"{n}.kt", perm=[0, 2, 3, 1])  # [B, N, H, T]
        v = node("Transpose", [node("Reshape", [f"{n}.v", heads], f"{n}.v4")], f"{n}.vt", perm=[0, 2, 1, 3])  # [B, N, T, H]
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"{n}.qk"), scale], f"{n}.scaled"), mask], f"{n}.masked")
        probs = node("Softmax", [scores], f"{n}.probs", axis=-1)
        att = node("Transpose", [node("MatMul", [probs, v], f"{n}.att")], f"{n}.att_t", perm=[0, 2, 1, 3])  # [B, T, N, H]
        att = node("Reshape", [att, merged], f"{n}.att_d")  # [B, T, D]
        x = node("Add", [x, linear(att, h["attn"]["c_proj"]["kernel"][i], h["attn"]["c_proj"]["bias"][i], f"{n}.c_proj")],
                 f"{n}.res1")
        m = layer_norm(x, h["ln_2"]["scale"][i], h["ln_2"]["bias"][i], f"{n}.ln_2")
        m = node("Gelu", [linear(m, h["mlp"]["c_fc"]["kernel"][i], h["mlp"]["c_fc"]["bias"][i], f"{n}.c_fc")], f"{n}.gelu",
                 approximate="tanh")
        x = node("Add", [x, linear(m, h["mlp"]["c_proj"]["kernel"][i], h["mlp"]["c_proj"]["bias"][i], f"{n}.mlp_proj")],
                 f"{n}.res2")
    x = layer_norm(x, p["ln_f"]["scale"], p["ln_f"]["bias"], "ln_f")
    # tied head: x @ wte^T; the transpose of a constant is folded once when the session loads
    nodes.append(helper.make_node("MatMul", [x, node("Transpose", ["wte"], "wte_t", perm=[1, 0])], ["logits"], name="head"))

    graph = helper.make_graph(
        nodes, "gpt2",
        inputs=[helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", V])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpt2_jax")
    model.ir_version = 9  # readable by onnxruntime >= 1.16
    model.doc_string = (f"GPT-2 (n_layer={config.n_layer}, n_embd={config.n_embd}, n_head={config.n_head}, "
                        f"n_ctx={config.n_ctx}, n_vocab={V}); input tokens int64 [batch, seq<=n_ctx]")
    return model


def save(out: pathlib.Path, config: ModelConfig, params, dtype: str = "float32", force: bool = False) -> pathlib.Path:
    import onnx

    check_dtype("onnx", dtype, ("float32",))
    check_standard(config, "onnx")
    check_params_match(params, config)
    model = build(config, params)
    external = sum(t.ByteSize() for t in model.graph.initializer) > _EXTERNAL_ABOVE
    with atomic_output(out, directory=True, force=force) as tmp:
        onnx.save_model(model, str(tmp / MODEL_FILE), save_as_external_data=external,
                        location=f"{MODEL_FILE}.data" if external else None)
    return out
