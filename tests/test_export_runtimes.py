"""Exports loaded by the runtimes that consume them: llama.cpp (llama-cpp-python) for GGUF,
ONNX Runtime, TensorFlow for SavedModel, Hugging Face's tokenizer for the hf directory; each
compared with Hugging Face's logits and our token ids. Plus a 124M-shaped model through every
format (slow).

The native runtimes (llama.cpp, ONNX Runtime, TensorFlow) run in child processes
(tests/_consumer_runtimes.py): a crash there is this test failing with the signal's name, not the
end of the suite. GGUF q8_0 on CPUs where llama.cpp's default path crashes (AMX repacking, issue
23) is checked with extra buffer types off, and the test says so; see `test_gguf_q8_0_*`.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import warnings

import numpy as np
import pytest

pytest.register_assert_rewrite("_export_fixtures")
from _consumer_runtimes import FORCE_CRASH_ENV, ConsumerCrash, llama_logits_with_fallback, run_consumer  # noqa: E402
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

    case = export_ckpt
    export_checkpoint(case.ckpt, "onnx", tmp_path / "onnx")
    assert sorted(os.listdir(tmp_path / "onnx")) == [".gpt2_jax-output", "model.onnx"]  # the file and --force's marker
    model = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 20
    batches = [tokens(case.config, batch=batch, seq=seq, seed=seed)  # dynamic batch and length, up to n_ctx
               for batch, seq, seed in ((2, 16, 1), (1, 5, 2), (3, 64, 3))]
    run = run_consumer("onnxruntime", "onnx_logits", path=str(tmp_path / "onnx" / "model.onnx"),
                       batches=[t.tolist() for t in batches])
    assert run["io"] == ["tokens", ["batch", "seq"], "logits", ["batch", "seq", 300]]
    for i, t in enumerate(batches):
        got = run[f"logits{i}"]
        ref = case.hf.logits(t)
        assert got.shape == ref.shape and np.abs(ref).max() > 1
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, forward(case.config, case.params, t)[..., :300], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# TensorFlow SavedModel


def test_savedmodel_serving_signature(export_ckpt, tmp_path, tokens):
    case = export_ckpt
    export_checkpoint(case.ckpt, "savedmodel", tmp_path / "sm")
    batches = [tokens(case.config, batch=batch, seq=seq, seed=seed) for batch, seq, seed in ((2, 16, 1), (1, 9, 4))]
    run = run_consumer("tensorflow", "savedmodel_logits", path=str(tmp_path / "sm"), batches=[t.tolist() for t in batches])
    assert run["outputs"] == ["logits"]
    for i, t in enumerate(batches):
        np.testing.assert_allclose(run[f"logits{i}"], case.hf.logits(t), rtol=0, atol=1e-4)


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


def test_gguf_in_llama_cpp(export_ckpt, tmp_path, forward):
    case = export_ckpt
    path = tmp_path / "model.gguf"
    export_checkpoint(case.ckpt, "gguf", path)
    prompt = ids_for(case, SHARED_TEXTS[0])
    run = run_consumer("llama.cpp", "llama_check", path=str(path), prompts=[prompt], texts=SHARED_TEXTS, generate=8)
    assert run["n_vocab"] == 300 and run["metadata"]["gpt2.context_length"] == "64"  # (it rounds n_ctx up to 256)
    for text, got_ids in zip(SHARED_TEXTS, run["tokens"]):  # llama.cpp's tokenizer, fed our tokens and merges
        assert got_ids == ids_for(case, text), text
    got = run["logits0"]
    ref = case.hf.logits(np.array([prompt]))[0]
    ours = forward(case.config, case.params, np.array([prompt], np.int32))[0, :, :300]
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 2e-3 * scale and np.abs(got - ours).max() <= 2e-3 * scale
    np.testing.assert_array_equal(got.argmax(-1), ours.argmax(-1))
    # greedy continuation: llama.cpp's own sampler at temperature 0 picks our argmax each step
    cont = run["generated"]
    full = np.array([prompt + cont], np.int32)
    want = forward(case.config, case.params, np.pad(full, ((0, 0), (0, 64 - full.shape[1]))))[0, :full.shape[1], :300]
    assert len(cont) == 8 and cont == want.argmax(-1)[len(prompt) - 1: -1].tolist()


@pytest.mark.parametrize("dtype, tolerance", [("float16", 5e-3), ("bfloat16", 2e-2)])
def test_gguf_reduced_precision_in_llama_cpp(export_ckpt, tmp_path, dtype, tolerance):
    import gguf

    case = export_ckpt
    path = tmp_path / f"model-{dtype}.gguf"
    export_checkpoint(case.ckpt, "gguf", path, dtype=dtype)
    reader = gguf.GGUFReader(str(path))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_qkv.weight"] == {"float16": "F16", "bfloat16": "BF16"}[dtype]
    assert kinds["blk.0.attn_qkv.bias"] == "F32" and kinds["output_norm.weight"] == "F32"
    prompt = ids_for(case, SHARED_TEXTS[1])
    got = run_consumer("llama.cpp", "llama_check", path=str(path), prompts=[prompt])["logits0"]
    ref = case.hf.logits(np.array([prompt]))[0]
    assert np.abs(got - ref).max() <= tolerance * np.abs(ref).max()
    # import reads the stored values back, close to the originals
    config, params, _ = read_model(path, "gguf")
    assert config == case.config
    k, k0 = params["h"]["mlp"]["c_fc"]["kernel"], case.params["h"]["mlp"]["c_fc"]["kernel"]
    assert np.abs(k - k0).max() <= {"float16": 1e-3, "bfloat16": 1e-2}[dtype] * np.abs(k0).max()


# q8_0: our file, and llama.cpp's own quantization of our float32 export (the reference the
# llama.cpp checks fall back on, see _consumer_runtimes.llama_logits_with_fallback)


@pytest.fixture(scope="module")
def q8_files(export_ckpt, tmp_path_factory):
    """(our q8_0 GGUF, llama.cpp's q8_0 of our float32 GGUF, our float32 GGUF)."""
    root = tmp_path_factory.mktemp("q8_0")
    f32, ours, theirs = root / "model-f32.gguf", root / "ours-q8_0.gguf", root / "llama-quantize-q8_0.gguf"
    export_checkpoint(export_ckpt.ckpt, "gguf", f32)
    export_checkpoint(export_ckpt.ckpt, "gguf", ours, dtype="q8_0")
    status = run_consumer("llama.cpp", "llama_quantize", src=str(f32), out=str(theirs))["status"]
    assert status == 0 and theirs.is_file(), f"llama_model_quantize returned {status}"
    return ours, theirs, f32


def test_gguf_q8_0_equals_llama_cpp_quantizer(q8_files, export_ckpt):
    """What llama.cpp reads from our q8_0 file (tensor names, types, shapes, bytes; the model's keys)
    is what llama.cpp's own quantizer writes from our float32 export."""
    import gguf

    ours, theirs = (gguf.GGUFReader(str(p)) for p in q8_files[:2])
    mine = {t.name: t for t in ours.tensors}
    assert sorted(mine) == sorted(t.name for t in theirs.tensors)
    for t in theirs.tensors:
        m = mine[t.name]
        assert (m.tensor_type.name, list(m.shape)) == (t.tensor_type.name, list(t.shape)), t.name
        np.testing.assert_array_equal(np.asarray(m.data).view(np.uint8), np.asarray(t.data).view(np.uint8), err_msg=t.name)
    assert mine["blk.0.attn_qkv.weight"].tensor_type.name == "Q8_0" and mine["token_embd.weight"].tensor_type.name == "Q8_0"
    assert mine["blk.0.attn_qkv.bias"].tensor_type.name == "F32" and mine["position_embd.weight"].tensor_type.name == "F32"

    def fields(reader):  # every key, the header's counts included
        return {k: v.contents() for k, v in reader.fields.items()}

    assert fields(ours) == fields(theirs)
    # import reads the stored values back (dequantized), close to the originals
    config, params, _ = read_model(q8_files[0], "gguf")
    k, k0 = params["h"]["mlp"]["c_fc"]["kernel"], export_ckpt.params["h"]["mlp"]["c_fc"]["kernel"]
    assert config == export_ckpt.config and np.abs(k - k0).max() <= 1e-2 * np.abs(k0).max()


def test_gguf_q8_0_in_llama_cpp(q8_files, export_ckpt, record_property):
    """Our q8_0 logits from llama.cpp: by its default path where that runs; where it crashes on
    llama.cpp's own q8_0 file too (Intel AMX, issue 23), with extra buffer types off, said in a warning
    and in the test's properties (junit XML)."""
    case = export_ckpt
    prompts = [ids_for(case, SHARED_TEXTS[1]), ids_for(case, SHARED_TEXTS[0])]
    notes = []
    run = llama_logits_with_fallback(q8_files[0], q8_files[1], prompts, report=notes.append)
    record_property("llama_cpp_extra_bufts", run["extra_bufts"])
    for note in notes:
        record_property("llama_cpp_fallback", note)
        warnings.warn(note)
    assert run["extra_bufts"] == (not notes)
    for i, prompt in enumerate(prompts):
        ref = case.hf.logits(np.array([prompt]))[0]
        assert np.abs(run[f"logits{i}"] - ref).max() <= 3e-2 * np.abs(ref).max()


def test_gguf_q8_0_fallback_when_forced(q8_files, export_ckpt, monkeypatch):
    """The fallback on any CPU: the default path made to crash (SIGSEGV before decoding) on every
    file; and a crash on our file alone (the probe, our float32 file, runs) is a failure, not a fallback."""
    case = export_ckpt
    prompt = ids_for(case, SHARED_TEXTS[1])
    monkeypatch.setenv(FORCE_CRASH_ENV, "default")
    notes = []
    run = llama_logits_with_fallback(q8_files[0], q8_files[1], [prompt], report=notes.append)
    assert run["extra_bufts"] is False and len(notes) == 1 and "SIGSEGV" in notes[0], notes
    ref = case.hf.logits(np.array([prompt]))[0]
    assert np.abs(run["logits0"] - ref).max() <= 3e-2 * np.abs(ref).max()
    monkeypatch.setenv(FORCE_CRASH_ENV, f"default:{q8_files[0].name}")
    with pytest.raises(AssertionError, match="crashes on our file but not on its own .*model-f32.gguf"):
        llama_logits_with_fallback(q8_files[0], q8_files[2], [prompt], report=notes.append)


def test_a_crashing_runtime_is_a_failed_test_not_a_dead_suite():
    """The containment itself: a child that segfaults or aborts raises ConsumerCrash (an
    AssertionError: the test fails) naming the runtime, the job and the signal; pytest lives on."""
    for how, signum in (("SIGSEGV", signal.SIGSEGV), ("abort", signal.SIGABRT)):
        with pytest.raises(ConsumerCrash, match=f"python crashed with {signal.Signals(signum).name}") as info:
            run_consumer("python", "crash", how=how)
        assert isinstance(info.value, AssertionError) and info.value.signum == signum and info.value.job == "crash"


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
    # The consumers run in child processes; each starts as soon as its file exists and runs while
    # this process goes on writing and reading the other formats.
    pool = concurrent.futures.ThreadPoolExecutor(3)
    llama_run = pool.submit(run_consumer, "llama.cpp", "llama_check", path=str(tmp_path / "m.gguf"), prompts=[prompt],
                            n_ctx=128, texts=[text])
    # (GGUF's bit-exact read-back is checked on the small model above: the gguf package's reader
    # spends ~10 s parsing 50k tokens and merges here; llama.cpp is its 124M consumer check)
    onnx_graph.save(tmp_path / "onnx", config, params)
    onnx_run = pool.submit(run_consumer, "onnxruntime", "onnx_logits", path=str(tmp_path / "onnx" / "model.onnx"),
                           batches=[[prompt]])
    savedmodel.save(tmp_path / "sm", config, params)
    tf_run = pool.submit(run_consumer, "tensorflow", "savedmodel_logits", path=str(tmp_path / "sm"), batches=[[prompt]])
    for fmt, name in (("llmc", "llmc"), ("openai-tf", "tf"), ("safetensors", "m.safetensors"), ("hf", "hf")):
        cfg, back, vocab_name = read_model(tmp_path / name, fmt)
        assert cfg == config and vocab_name == "gpt2", fmt
        assert_params_equal(back, params)
    pool.shutdown()
    np.testing.assert_allclose(onnx_run.result()["logits0"][0], ours, rtol=0, atol=1e-4 * max(scale, 1))
    np.testing.assert_allclose(tf_run.result()["logits0"][0], ours, rtol=0, atol=1e-4 * max(scale, 1))
    run = llama_run.result()
    assert run["tokens"] == [prompt]
    got = run["logits0"]
    assert np.abs(got - ours).max() <= 2e-3 * scale
    np.testing.assert_array_equal(got.argmax(-1), ours.argmax(-1))
