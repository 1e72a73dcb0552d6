"""Export formats checked by their consumers: llm.c (read by a reader written from its documented
layout), OpenAI's TensorFlow release (read by TensorFlow), flat safetensors; import round trips;
the `export` / `import` commands and their errors."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

pytest.register_assert_rewrite("_export_fixtures")
from _export_fixtures import SHARED_TEXTS, assert_params_equal  # noqa: E402
from gpt2_jax import cli  # noqa: E402
from gpt2_jax.export import ExportError, export_checkpoint, read_model  # noqa: E402

pytest_plugins = ["_export_fixtures"]


def hf_state(case) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in case.hf.model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# llm.c: a reader written from llm.c's documented layout (train_gpt2.py write_model/write_tensors,
# train_gpt2.c fill_in_parameter_sizes), independent of our writer


def read_llmc_by_spec(path):
    import ml_dtypes

    raw = path.read_bytes()
    header = struct.unpack("<256i", raw[:1024])
    magic, version, max_t, V, L, NH, C, Vp = header[:8]
    assert magic == 20240326 and version in (3, 5) and not any(header[8:])
    dtype = np.dtype(np.float32) if version == 3 else np.dtype(ml_dtypes.bfloat16)
    sizes = [("wte", (Vp, C)), ("wpe", (max_t, C)), ("ln1w", (L, C)), ("ln1b", (L, C)), ("qkvw", (L, 3 * C, C)),
             ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)), ("ln2w", (L, C)), ("ln2b", (L, C)),
             ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)), ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)),
             ("lnfw", (C,)), ("lnfb", (C,))]
    out, offset = {}, 1024
    for name, shape in sizes:
        n = int(np.prod(shape)) * dtype.itemsize
        out[name] = np.frombuffer(raw[offset:offset + n], dtype).reshape(shape).astype(np.float32)
        offset += n
    assert offset == len(raw), "file longer than its header says"
    return dict(version=version, max_t=max_t, V=V, L=L, NH=NH, C=C, Vp=Vp), out


def read_llmc_tokenizer_by_spec(path):
    raw = path.read_bytes()
    magic, version, n, eot = struct.unpack("<4i", raw[:16])
    assert magic == 20240328 and version == 2
    tokens, offset = [], 1024
    for _ in range(n):
        length = raw[offset]
        tokens.append(raw[offset + 1: offset + 1 + length])
        offset += 1 + length
    assert offset == len(raw)
    return tokens, eot


def expected_llmc_tensors(case, cast=lambda x: x):
    """What llm.c's own exporter would write for the HF model (Conv1D weights transposed to
    nn.Linear's [out, in], as llm.c's GPT loads them from Hugging Face)."""
    s = {k: cast(v) for k, v in hf_state(case).items()}
    L = case.config.n_layer

    def stack(name, transpose=False):
        return np.stack([s[f"transformer.h.{i}.{name}"].T if transpose else s[f"transformer.h.{i}.{name}"] for i in range(L)])

    return {"wpe": s["transformer.wpe.weight"], "ln1w": stack("ln_1.weight"), "ln1b": stack("ln_1.bias"),
            "qkvw": stack("attn.c_attn.weight", True), "qkvb": stack("attn.c_attn.bias"),
            "attprojw": stack("attn.c_proj.weight", True), "attprojb": stack("attn.c_proj.bias"),
            "ln2w": stack("ln_2.weight"), "ln2b": stack("ln_2.bias"), "fcw": stack("mlp.c_fc.weight", True),
            "fcb": stack("mlp.c_fc.bias"), "fcprojw": stack("mlp.c_proj.weight", True),
            "fcprojb": stack("mlp.c_proj.bias"), "lnfw": s["transformer.ln_f.weight"], "lnfb": s["transformer.ln_f.bias"],
            "wte": s["transformer.wte.weight"]}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_llmc_layout_follows_the_spec(export_ckpt, tmp_path, dtype):
    import torch

    case = export_ckpt
    export_checkpoint(case.ckpt, "llmc", tmp_path / "llmc", dtype=dtype)
    assert sorted(os.listdir(tmp_path / "llmc")) == [".gpt2_jax-output", "model.bin", "tokenizer.bin"]  # the marker: --force may replace it
    header, tensors = read_llmc_by_spec(tmp_path / "llmc" / "model.bin")
    c = case.config
    assert header == dict(version=3 if dtype == "float32" else 5, max_t=c.n_ctx, V=c.n_vocab, L=c.n_layer, NH=c.n_head,
                          C=c.n_embd, Vp=384)
    # bfloat16 as PyTorch rounds it (llm.c's write_bf16 is `tensor.to(torch.bfloat16)`)
    cast = (lambda x: x) if dtype == "float32" else (lambda x: torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    want = expected_llmc_tensors(case, cast)
    np.testing.assert_array_equal(tensors["wte"][: c.n_vocab], want.pop("wte"))
    assert not tensors["wte"][c.n_vocab:].any()  # padding rows are zero, as llm.c's pad_vocab makes them
    for name, value in want.items():
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)

    from gpt2_jax.tokenizer import load_tokenizer

    tokens, eot = read_llmc_tokenizer_by_spec(tmp_path / "llmc" / "tokenizer.bin")
    tok = load_tokenizer(str(case.vocab_dir))
    assert eot == tok.eot_id == c.n_vocab - 1
    assert tokens == [tok.decode_bytes([i]) for i in range(tok.n_vocab)]  # llm.c's write_tokenizer: decode_bytes per id


def test_llmc_round_trip(export_ckpt, tmp_path):
    case = export_ckpt
    export_checkpoint(case.ckpt, "llmc", tmp_path / "llmc")
    config, params, vocab = read_model(tmp_path / "llmc", "llmc")
    assert config == case.config
    assert_params_equal(params, case.params)
    # the vocabulary came back from the token file: same merges as the one we exported
    from gpt2_jax.tokenizer.formats import read_gpt2_files

    assert vocab.merges == read_gpt2_files(case.vocab_dir)[0]
    # bfloat16: import gives exactly the bfloat16 values, widened
    export_checkpoint(case.ckpt, "llmc", tmp_path / "llmc16", dtype="bfloat16")
    _, params16, _ = read_model(tmp_path / "llmc16" / "model.bin", "llmc")
    import ml_dtypes

    k = params16["h"]["mlp"]["c_fc"]["kernel"]
    np.testing.assert_array_equal(k, case.params["h"]["mlp"]["c_fc"]["kernel"].astype(ml_dtypes.bfloat16).astype(np.float32))


@pytest.mark.parametrize("damage, words", [("truncated", "truncated"), ("foreign", "magic"), ("version", "version 4"),
                                           ("tiny", "shorter than")])
def test_llmc_bad_files(export_ckpt, tmp_path, damage, words):
    export_checkpoint(export_ckpt.ckpt, "llmc", tmp_path / "llmc")
    f = tmp_path / "llmc" / "model.bin"
    raw = bytearray(f.read_bytes())
    if damage == "truncated":
        raw = raw[:-100]
    elif damage == "foreign":
        raw[:4] = struct.pack("<i", 20240803)  # llm.c's Llama-3 magic
    elif damage == "version":
        raw[4:8] = struct.pack("<i", 4)
    else:
        raw = raw[:100]
    f.write_bytes(bytes(raw))
    with pytest.raises(ExportError, match=words) as e:
        read_model(f, "llmc")
    assert "model.bin" in str(e.value)


# ----------------------------------------------------------------------------------------------
# OpenAI's release layout, read by TensorFlow

RELEASED_NAMES = ["model/wte", "model/wpe", "model/ln_f/g", "model/ln_f/b"] + [
    f"model/h{i}/{n}" for i in range(2) for n in
    ("ln_1/g", "ln_1/b", "attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b", "ln_2/g", "ln_2/b",
     "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b")]


def test_openai_tf_reads_in_tensorflow(export_ckpt, tmp_path):
    import tensorflow as tf

    case = export_ckpt
    out = tmp_path / "openai"
    export_checkpoint(case.ckpt, "openai-tf", out)
    assert {"checkpoint", "hparams.json", "encoder.json", "vocab.bpe", "model.ckpt.index"} <= set(os.listdir(out))
    assert json.loads((out / "hparams.json").read_text()) == {"n_vocab": 300, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}
    assert tf.train.latest_checkpoint(str(out)).endswith("model.ckpt")
    reader = tf.train.load_checkpoint(str(out))
    shapes = reader.get_variable_to_shape_map()
    assert sorted(shapes) == sorted(RELEASED_NAMES)
    D = 64
    assert shapes["model/h1/attn/c_attn/w"] == [1, D, 3 * D] and shapes["model/h0/mlp/c_proj/w"] == [1, 4 * D, D]
    assert shapes["model/wte"] == [300, D] and shapes["model/ln_f/g"] == [D]
    s = hf_state(case)
    np.testing.assert_array_equal(reader.get_tensor("model/h1/attn/c_attn/w")[0], s["transformer.h.1.attn.c_attn.weight"])
    np.testing.assert_array_equal(reader.get_tensor("model/wte"), s["transformer.wte.weight"])
    np.testing.assert_array_equal(reader.get_tensor("model/h0/ln_2/b"), s["transformer.h.0.ln_2.bias"])
    # the BPE files are the checkpoint's vocabulary, byte for byte
    for f in ("encoder.json", "vocab.bpe"):
        assert json.loads((out / f).read_text()) == json.loads((case.vocab_dir / f).read_text()) if f.endswith("json") \
            else (out / f).read_text() == (case.vocab_dir / f).read_text()
    # tiktoken's reader of OpenAI's files (data_gym_to_mergeable_bpe_ranks) tokenizes like us
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from gpt2_jax.tokenizer import load_tokenizer
    from gpt2_jax.tokenizer.vocab import GPT2_PATTERN

    ranks = data_gym_to_mergeable_bpe_ranks(str(out / "vocab.bpe"), str(out / "encoder.json"))
    enc = tiktoken.Encoding("exported", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 299})
    ours = load_tokenizer(str(case.vocab_dir))
    for text in SHARED_TEXTS:
        assert enc.encode(text, allowed_special="all") == ours.encode(text, allow_special=True)
    config, params, vocab = read_model(out, "openai-tf")
    assert config == case.config
    assert_params_equal(params, case.params)


def test_checkpoint_written_by_tensorflow_imports_to_hf_logits(export_ckpt, tmp_path, tokens, forward):
    """A TF1 Saver checkpoint (TensorFlow's own writer, as openai/gpt-2 used) in the release layout,
    holding the Hugging Face model's weights, imports to HF's logits."""
    import tensorflow as tf

    case = export_ckpt
    s = hf_state(case)
    values = {"model/wte": s["transformer.wte.weight"], "model/wpe": s["transformer.wpe.weight"],
              "model/ln_f/g": s["transformer.ln_f.weight"], "model/ln_f/b": s["transformer.ln_f.bias"]}
    hf_names = {"ln_1/g": "ln_1.weight", "ln_1/b": "ln_1.bias", "attn/c_attn/w": "attn.c_attn.weight",
                "attn/c_attn/b": "attn.c_attn.bias", "attn/c_proj/w": "attn.c_proj.weight", "attn/c_proj/b": "attn.c_proj.bias",
                "ln_2/g": "ln_2.weight", "ln_2/b": "ln_2.bias", "mlp/c_fc/w": "mlp.c_fc.weight", "mlp/c_fc/b": "mlp.c_fc.bias",
                "mlp/c_proj/w": "mlp.c_proj.weight", "mlp/c_proj/b": "mlp.c_proj.bias"}
    for i in range(2):
        for ours, hf in hf_names.items():
            v = s[f"transformer.h.{i}.{hf}"]
            values[f"model/h{i}/{ours}"] = v[None] if ours.endswith("/w") else v
    out = tmp_path / "released"
    out.mkdir()
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=tf.constant(v)) for name, v in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(out / "model.ckpt"))
    (out / "hparams.json").write_text(json.dumps({"n_vocab": 300, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}))
    config, params, vocab = read_model(out, "openai-tf")
    assert vocab == "unknown"  # no encoder.json beside it
    t = tokens(config, seed=5)
    ref = case.hf.logits(t)
    np.testing.assert_allclose(forward(config, params, t)[..., :300], ref, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(forward(config, params, t)[..., :300], forward(config, case.params, t)[..., :300])


def test_openai_tf_bad_directories(export_ckpt, tmp_path):
    out = tmp_path / "openai"
    export_checkpoint(export_ckpt.ckpt, "openai-tf", out)
    hp = json.loads((out / "hparams.json").read_text())
    (out / "hparams.json").write_text(json.dumps(hp | {"n_embd": 128, "n_head": 4}))
    with pytest.raises(ExportError, match=r"model/wte.*\(300, 64\).*\(300, 128\)"):
        read_model(out, "openai-tf")
    (out / "hparams.json").unlink()
    with pytest.raises(ExportError, match="no hparams.json"):
        read_model(out, "openai-tf")
    (out / "hparams.json").write_text(json.dumps(hp))
    data = next(out.glob("model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ExportError, match="damaged|not a readable"):
        read_model(out, "openai-tf")


# ----------------------------------------------------------------------------------------------
# flat safetensors


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_flat_safetensors(export_ckpt, tmp_path, dtype):
    from safetensors import safe_open

    case = export_ckpt
    out = tmp_path / "model.safetensors"
    export_checkpoint(case.ckpt, "safetensors", out, dtype=dtype)
    assert os.listdir(tmp_path) == ["model.safetensors"]
    with safe_open(str(out), framework="pt") as f:  # PyTorch reads it too
        meta = f.metadata()
        kernel = f.get_tensor("h/attn/c_attn/kernel")
        assert sorted(f.keys())[:3] == ["h/attn/c_attn/bias", "h/attn/c_attn/kernel", "h/attn/c_proj/bias"]
    assert str(kernel.dtype) == f"torch.{dtype}" and tuple(kernel.shape) == (2, 64, 192)
    assert json.loads(meta["gpt2_jax.model_config"])["n_vocab"] == 300 and meta["gpt2_jax.vocab"] == str(case.vocab_dir)
    config, params, _ = read_model(out, "safetensors")
    assert config == case.config
    if dtype == "float32":
        assert_params_equal(params, case.params)
    else:
        np.testing.assert_allclose(params["wte"]["embedding"], case.params["wte"]["embedding"], rtol=1e-2, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# the commands


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_import_round_trip(export_ckpt, tmp_path, capsys):
    from gpt2_jax import checkpoint

    case = export_ckpt
    code, out, err = run_cli(capsys, "export", case.ckpt, "--format", "llmc", "--out", tmp_path / "m")
    assert code == 0, err
    assert "step 3" in out and "MiB" in out
    code, out, err = run_cli(capsys, "import", tmp_path / "m", "--format", "llmc", "--out", tmp_path / "ckpt")
    assert code == 0, err
    step, cfg, params, _ = checkpoint.restore(tmp_path / "ckpt")
    assert step == 0 and cfg.model == case.config
    assert_params_equal(jax_to_numpy(params), case.params)
    _, meta, _ = checkpoint.restore_meta(tmp_path / "ckpt")
    # the imported vocabulary is kept beside the weights and tokenizes like the original
    from gpt2_jax.tokenizer import load_tokenizer

    assert meta["vocab"] == str((tmp_path / "ckpt" / "vocab").absolute())
    ours, theirs = load_tokenizer(str(case.vocab_dir)), load_tokenizer(meta["vocab"])
    for text in SHARED_TEXTS:
        assert theirs.encode(text, allow_special=True) == ours.encode(text, allow_special=True)
    # the old command name still works
    code, _, err = run_cli(capsys, "import-hf", case.hf.path, "--out", tmp_path / "from_hf")
    assert code == 0, err


def jax_to_numpy(tree):
    import jax

    return jax.tree_util.tree_map(np.asarray, tree)


def test_cli_refuses_existing_output_unless_forced(export_ckpt, tmp_path, capsys):
    case = export_ckpt
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "export", case.ckpt, "--format", "safetensors", "--out", target)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "already exists" in err and "--force" in err and target.read_bytes() == b"precious"
    # --force replaces only an output of this tool and this format: not the user's bytes
    code, _, err = run_cli(capsys, "export", case.ckpt, "--format", "safetensors", "--out", target, "--force")
    assert code == 2 and "is not a file of this format" in err and target.read_bytes() == b"precious"
    target.unlink()
    for force in ((), ("--force",)):
        code, _, err = run_cli(capsys, "export", case.ckpt, "--format", "safetensors", "--out", target, *force)
        assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    # a directory output: a folder of the user's is refused even when forced; our own is replaced
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "old.txt").write_text("old")
    code, _, err = run_cli(capsys, "export", case.ckpt, "--format", "openai-tf", "--out", tmp_path / "tf")
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(capsys, "export", case.ckpt, "--format", "openai-tf", "--out", tmp_path / "tf", "--force")
    assert code == 2 and "not written by gpt2-jax" in err and os.listdir(tmp_path / "tf") == ["old.txt"]
    for force in ((), ("--force",)):
        code, _, err = run_cli(capsys, "export", case.ckpt, "--format", "openai-tf", "--out", tmp_path / "tf2", *force)
        assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "tf", "tf2"]


@pytest.mark.parametrize("argv, words", [
    (["--format", "llmc", "--dtype", "float16"], ["'llmc'", "float16", "float32, bfloat16"]),
    (["--format", "openai-tf", "--dtype", "q8_0"], ["'openai-tf'", "q8_0"]),
    (["--format", "llmc", "--vocab", "gpt2"], ["50257", "n_vocab=300"]),
])
def test_cli_bad_requests(export_ckpt, tmp_path, capsys, argv, words):
    code, _, err = run_cli(capsys, "export", export_ckpt.ckpt, "--out", tmp_path / "x", *argv)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err
    assert os.listdir(tmp_path) == []


def test_cli_names_a_missing_format_package(export_ckpt, tmp_path, capsys, monkeypatch):
    """On an image without a format's package (the GPU one has no gguf, safetensors or onnx): one
    `error:` line naming the package to install, exit 2, nothing written."""
    import sys

    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ModuleNotFoundError(name="gguf")
    code, _, err = run_cli(capsys, "export", export_ckpt.ckpt, "--format", "gguf", "--out", tmp_path / "m.gguf")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "--format gguf needs the Python package 'gguf'" in err and "pip install gguf" in err
    assert os.listdir(tmp_path) == []


def test_export_needs_a_vocabulary(tmp_path, tiny_config, tiny_params, capsys):
    from _export_fixtures import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "ckpt", tiny_config, tiny_params, "unknown")
    code, _, err = run_cli(capsys, "export", ckpt, "--format", "openai-tf", "--out", tmp_path / "x")
    assert code == 2 and "records no vocabulary" in err and "--vocab" in err
    code, _, err = run_cli(capsys, "import", tmp_path / "nothing", "--format", "llmc", "--out", tmp_path / "y")
    assert code == 2 and "does not exist" in err
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_sentencepiece_vocabulary_is_refused_where_a_bpe_is_needed(export_ckpt, tmp_path):
    from gpt2_jax.tokenizer import train_sentencepiece

    docs = [" ".join(f"word{i % 97} piece{i % 31}" for i in range(j, j + 400)) for j in range(0, 4000, 400)]
    spm_dir = tmp_path / "spm"
    train_sentencepiece(300, documents=docs, processes=1).save(spm_dir)
    with pytest.raises(ExportError, match="sentencepiece.*byte-level BPE.*hf, safetensors"):
        export_checkpoint(export_ckpt.ckpt, "gguf", tmp_path / "m.gguf", vocab=str(spm_dir))
    assert sorted(os.listdir(tmp_path)) == ["spm"]


def test_failed_export_leaves_nothing_behind(export_ckpt, tmp_path, monkeypatch):
    from gpt2_jax.export import llmc

    def disk_full(path, tokens, eot_id):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(llmc, "write_tokenizer", disk_full)
    with pytest.raises(OSError, match="No space"):
        export_checkpoint(export_ckpt.ckpt, "llmc", tmp_path / "llmc")
    assert os.listdir(tmp_path) == []
    # and a forced replacement that fails keeps the old output whole
    from gpt2_jax.export.output import MARKER

    (tmp_path / "llmc").mkdir()
    (tmp_path / "llmc" / "model.bin").write_bytes(b"old")
    (tmp_path / "llmc" / MARKER).write_text("")  # as if an earlier export wrote it
    with pytest.raises(OSError):
        export_checkpoint(export_ckpt.ckpt, "llmc", tmp_path / "llmc", force=True)
    assert os.listdir(tmp_path) == ["llmc"] and (tmp_path / "llmc" / "model.bin").read_bytes() == b"old"
