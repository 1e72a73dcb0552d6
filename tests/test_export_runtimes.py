"""Exports loaded by the runtimes that consume them: llama.cpp (llama-cpp-python) for GGUF,
ONNX Runtime, TensorFlow for SavedModel, Hugging Face's tokenizer for the hf directory; each
compared with Hugging Face's logits and our token ids. Plus a 124M-shaped model through every
format (slow)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.register_assert_rewrite("_export_fixtures")
from _export_fixtures import SHARED_TEXTS, assert_params_equal  # noqa: E402
from gpt2_jax.export import ExportError, export_checkpoint, read_model  # noqa: E402

pytest_plugins = ["_export_fixtures"]


def ids_for(case, text):
    from gpt2_jax.tokenizer import load_tokenizer

    return load_tokenizer(str(case.vocab_dir)).encode(text, allow_special=True)


# ----------------------------------------------------------------------------------------------
# ONNX Runtime


def test_onnx_runtime_logits(export_ckpt, tmp_path, tokens, forward):
    import onnx
    import onnxruntime as ort

    case = export_ckpt
    export_checkpoint(case.ckpt, "onnx", tmp_path / "onnx")
    assert os.listdir(tmp_path / "onnx") == ["model.onnx"]
    model = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 20
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    [inp], [out] = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == ("tokens", ["batch", "seq"], "logits", ["batch", "seq", 300])
    for batch, seq, seed in ((2, 16, 1), (1, 5, 2), (3, 64, 3)):  # dynamic batch and length, up to n_ctx
        t = tokens(case.config, batch=batch, seq=seq, seed=seed)
        got = session.run(None, {"tokens": t.astype(np.int64)})[0]
        ref = case.hf.logits(t)
        assert got.shape == ref.shape and np.abs(ref).max() > 1
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, forward(case.config, case.params, t)[..., :300], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# TensorFlow SavedModel


def test_savedmodel_serving_signature(export_ckpt, tmp_path, tokens):
    import tensorflow as tf

    case = export_ckpt
    export_checkpoint(case.ckpt, "savedmodel", tmp_path / "sm")
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_outputs) == ["logits"]
    for batch, seq, seed in ((2, 16, 1), (1, 9, 4)):
        t = tokens(case.config, batch=batch, seq=seq, seed=seed)
        got = serve(tokens=tf.constant(t, tf.int32))["logits"].numpy()
        np.testing.assert_allclose(got, case.hf.logits(t), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Hugging Face: the exported directory also carries the tokenizer


def test_hf_export_carries_the_tokenizer(export_ckpt, tmp_path):
    import transformers

    case = export_ckpt
    out = tmp_path / "hf"
    export_checkpoint(case.ckpt, "hf", out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    for text in SHARED_TEXTS:
        assert tok(text)["input_ids"] == ids_for(case, text), text
    config, params, vocab = read_model(out, "hf")
    assert config == case.config and not isinstance(vocab, str)  # its own vocabulary came back
    assert_params_equal(params, case.params)


# ----------------------------------------------------------------------------------------------
# GGUF, read by llama.cpp


def llama(path, n_ctx=64):
    import llama_cpp  # a test extra: a missing install fails here rather than skipping the llama.cpp checks
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                           n_threads=2, verbose=False)


def llama_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], np.float32)


def test_gguf_in_llama_cpp(export_ckpt, tmp_path, forward):
    case = export_ckpt
    path = tmp_path / "model.gguf"
    export_checkpoint(case.ckpt, "gguf", path)
    llm = llama(path)
    assert llm.n_vocab() == 300 and llm.metadata["gpt2.context_length"] == "64"  # (it rounds n_ctx up to 256)
    for text in SHARED_TEXTS:  # llama.cpp's tokenizer, fed our tokens and merges, gives our ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids_for(case, text), text
    prompt = ids_for(case, SHARED_TEXTS[0])
    got = llama_logits(llm, prompt)
    ref = case.hf.logits(np.array([prompt]))[0]
    ours = forward(case.config, case.params, np.array([prompt], np.int32))[0, :, :300]
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 2e-3 * scale and np.abs(got - ours).max() <= 2e-3 * scale
    np.testing.assert_array_equal(got.argmax(-1), ours.argmax(-1))
    # greedy continuation: llama.cpp's own sampler at temperature 0 picks our argmax each step
    llm.reset()
    cont = []
    for token in llm.generate(prompt, top_k=1, temp=0.0):
        cont.append(token)
        if len(cont) == 8:
            break
    full = np.array([prompt + cont], np.int32)
    want = forward(case.config, case.params, np.pad(full, ((0, 0), (0, 64 - full.shape[1]))))[0, :full.shape[1], :300]
    assert cont == want.argmax(-1)[len(prompt) - 1: -1].tolist()


@pytest.mark.parametrize("dtype, tolerance", [("float16", 5e-3), ("bfloat16", 2e-2), ("q8_0", 3e-2)])
def test_gguf_reduced_precision_in_llama_cpp(export_ckpt, tmp_path, dtype, tolerance):
    import gguf

    case = export_ckpt
    path = tmp_path / f"model-{dtype}.gguf"
    export_checkpoint(case.ckpt, "gguf", path, dtype=dtype)
    reader = gguf.GGUFReader(str(path))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_qkv.weight"] == {"float16": "F16", "bfloat16": "BF16", "q8_0": "Q8_0"}[dtype]
    assert kinds["blk.0.attn_qkv.bias"] == "F32" and kinds["output_norm.weight"] == "F32"
    llm = llama(path)
    prompt = ids_for(case, SHARED_TEXTS[1])
    got, ref = llama_logits(llm, prompt), case.hf.logits(np.array([prompt]))[0]
    assert np.abs(got - ref).max() <= tolerance * np.abs(ref).max()
    # import reads the stored values back (dequantized), close to the originals
    config, params, _ = read_model(path, "gguf")
    assert config == case.config
    k, k0 = params["h"]["mlp"]["c_fc"]["kernel"], case.params["h"]["mlp"]["c_fc"]["kernel"]
    assert np.abs(k - k0).max() <= {"float16": 1e-3, "bfloat16": 1e-2, "q8_0": 1e-2}[dtype] * np.abs(k0).max()


def test_gguf_round_trip_and_bad_files(export_ckpt, tmp_path):
    case = export_ckpt
    path = tmp_path / "model.gguf"
    export_checkpoint(case.ckpt, "gguf", path)
    config, params, vocab = read_model(path, "gguf")
    assert config == case.config
    assert_params_equal(params, case.params)
    from gpt2_jax.tokenizer.formats import read_gpt2_files

    assert vocab.merges == read_gpt2_files(case.vocab_dir)[0] and vocab.special_tokens == {"<|endoftext|>": 299}
    raw = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ExportError, match="cut.gguf.*not a readable GGUF"):
        read_model(tmp_path / "cut.gguf", "gguf")
    (tmp_path / "foreign.gguf").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(ExportError, match="foreign.gguf"):
        read_model(tmp_path / "foreign.gguf", "gguf")


def test_gguf_refuses_what_it_cannot_hold(tmp_path):
    """n_embd=48: q8_0 blocks of 32 do not divide the rows; the error names the fix."""
    import jax

    from gpt2_jax.config import ModelConfig
    from gpt2_jax.export import gguf_format
    from gpt2_jax.model import init_params

    config = ModelConfig(n_vocab=100, n_ctx=16, n_embd=48, n_layer=1, n_head=3)
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    params = jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32), shapes)
    with pytest.raises(ExportError, match="multiple of 32.*float16"):
        gguf_format.save(tmp_path / "m.gguf", config, params, None, dtype="q8_0")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# a 124M-shaped model through every format


@pytest.mark.slow
def test_124m_through_every_format(gpt2_ckpt, tmp_path):
    """GPT-2 small's shapes and vocabulary: the importable formats round-trip bit-exactly; ONNX
    Runtime, TensorFlow and llama.cpp give our logits (llama.cpp on a prompt it tokenized itself)."""
    import jax
    import onnxruntime as ort
    import tensorflow as tf

    from gpt2_jax.model import GPT
    from gpt2_jax.tokenizer import load_tokenizer

    ckpt, config, params = gpt2_ckpt
    text = SHARED_TEXTS[2]
    prompt = load_tokenizer("gpt2").encode(text)
    ours = np.asarray(jax.jit(lambda p, t: GPT(config).apply({"params": p}, t)[0])(params, np.array([prompt], np.int32)))
    ours = ours[0, :, : config.n_vocab]
    scale = np.abs(ours).max()
    # the writers straight from memory (export_checkpoint's restore is covered above; at this
    # size it would cost seconds per format), except GGUF, which goes the whole user path
    from gpt2_jax.export import flat_safetensors, hf, llmc, onnx_graph, openai_tf, savedmodel
    from gpt2_jax.export.vocab import ExportVocab

    vocab = ExportVocab.load("gpt2", config.n_vocab, "test")
    llmc.save(tmp_path / "llmc", config, params, vocab)
    openai_tf.save(tmp_path / "tf", config, params, vocab)
    flat_safetensors.save(tmp_path / "m.safetensors", config, params, "gpt2")
    hf.save_hf_dir(tmp_path / "hf", config, params)
    hf.write_tokenizer_files(tmp_path / "hf", vocab, config)
    export_checkpoint(ckpt, "gguf", tmp_path / "m.gguf")
    # (GGUF's bit-exact read-back is checked on the small model above: the gguf package's reader
    # spends ~10 s parsing 50k tokens and merges here; llama.cpp below is its 124M consumer check)
    for fmt, name in (("llmc", "llmc"), ("openai-tf", "tf"), ("safetensors", "m.safetensors"), ("hf", "hf")):
        cfg, back, vocab_name = read_model(tmp_path / name, fmt)
        assert cfg == config and vocab_name == "gpt2", fmt
        assert_params_equal(back, params)
    onnx_graph.save(tmp_path / "onnx", config, params)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": np.array([prompt], np.int64)})[0][0]
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-4 * max(scale, 1))
    del session
    savedmodel.save(tmp_path / "sm", config, params)
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    got = serve(tokens=tf.constant([prompt], tf.int32))["logits"].numpy()[0]
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-4 * max(scale, 1))
    llm = llama(tmp_path / "m.gguf", n_ctx=128)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
    got = llama_logits(llm, prompt)
    assert np.abs(got - ours).max() <= 2e-3 * scale
    np.testing.assert_array_equal(got.argmax(-1), ours.argmax(-1))
