"""gpt2_jax.export: Hugging Face directories out and in, exact round trips, clear errors on bad files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gpt2_jax.export import ExportError, load_hf_dir, save_hf_dir

EXPECTED_FILES = {"config.json", "model.safetensors", "generation_config.json"}


@pytest.fixture(scope="module")
def our_params(tiny_config, init):
    """Our own init with every leaf perturbed (so biases and LayerNorms are not 0/1), as numpy;
    the padded vocabulary rows stay zero, as init leaves them."""
    params = jax.tree_util.tree_map(np.asarray, init(tiny_config, seed=7))
    rng = np.random.RandomState(7)
    params = jax.tree_util.tree_map(lambda x: (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32), params)
    params["wte"]["embedding"][tiny_config.n_vocab:] = 0.0
    return params


def _snapshot(directory):
    """{relative path: bytes} of every file below `directory`, plus the directory names."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), directory) + "/"] = None
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = fh.read()
    return out


def _copy_of(hf_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(hf_dir, dst)
    return dst


# ----------------------------------------------------------------------------------------------
# export to Hugging Face


def test_export_loads_in_transformers(tmp_path, tiny_config, our_params, tokens, forward):
    import torch
    import transformers

    out = save_hf_dir(tmp_path / "exported", tiny_config, our_params)
    assert out == tmp_path / "exported"
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert os.listdir(tmp_path) == ["exported"]  # no temporary directory left beside it

    model, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"] and not info["error_msgs"], info
    model.eval()
    c = model.config
    assert (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) == (300, 64, 64, 2, 4)
    assert c.activation_function == "gelu_new" and c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    # the perturbed values really arrived (e.g. a LayerNorm bias of the last layer)
    np.testing.assert_array_equal(model.transformer.h[1].ln_2.bias.detach().numpy(), our_params["h"]["ln_2"]["bias"][1])

    t = tokens(tiny_config, seed=3)
    with torch.no_grad():
        ref = model(torch.from_numpy(t.astype(np.int64))).logits.numpy()
    ours = forward(tiny_config, our_params, t)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(ours[..., : tiny_config.n_vocab], ref, rtol=0, atol=1e-4)


def test_export_into_existing_empty_directory(tmp_path, tiny_config, our_params):
    (tmp_path / "empty").mkdir()
    save_hf_dir(tmp_path / "empty", tiny_config, our_params)
    assert {p.name for p in (tmp_path / "empty").iterdir()} == EXPECTED_FILES
    assert os.listdir(tmp_path) == ["empty"]


def test_round_trip_is_exact(tmp_path, tiny_config, our_params):
    path = save_hf_dir(tmp_path / "a", tiny_config, our_params)
    config, params = load_hf_dir(path)
    assert config == tiny_config
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(our_params)
    for (key, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(our_params)):
        assert a.dtype == np.float32 and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(key))
    # and once more: save(load(save(p))) writes the same tensors
    path_b = save_hf_dir(tmp_path / "b", config, params)
    a_tensors, b_tensors = load_file(str(path / "model.safetensors")), load_file(str(path_b / "model.safetensors"))
    assert a_tensors.keys() == b_tensors.keys()
    for k in a_tensors:
        np.testing.assert_array_equal(a_tensors[k], b_tensors[k])


def test_load_keeps_non_hf_fields_of_base(tmp_path, tiny_config, our_params):
    path = save_hf_dir(tmp_path / "a", tiny_config, our_params)
    base = dataclasses.replace(tiny_config, n_layer=12, dtype="bfloat16", scan_layers=False, remat="dots")
    config, _ = load_hf_dir(path, base=base)
    assert config == dataclasses.replace(tiny_config, dtype="bfloat16", scan_layers=False, remat="dots")


def test_load_original_openai_layout(tmp_path, hf_tiny, tiny_params):
    """The hub's original gpt2 checkpoint has no `transformer.` prefix and carries the causal-mask
    buffers (`h.N.attn.bias`); both must be handled."""
    path = _copy_of(hf_tiny.path, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(2):
        renamed[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    save_file(renamed, str(path / "model.safetensors"), metadata={"format": "pt"})
    _, params = load_hf_dir(path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, tiny_params)


# ----------------------------------------------------------------------------------------------
# refusing to overwrite, and leaving nothing behind


def test_refuses_non_empty_output_dir(tmp_path, tiny_config, our_params):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    (out / "sub").mkdir()
    (out / "sub" / "model.safetensors").write_bytes(b"\x00old")
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError) as e:
        save_hf_dir(out, tiny_config, our_params)
    assert str(out) in str(e.value) and "not empty" in str(e.value)
    assert _snapshot(tmp_path) == before  # untouched, and no temporary directory beside it


def test_failed_save_leaves_nothing_behind(tmp_path, tiny_config, our_params, monkeypatch):
    import safetensors.numpy

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", disk_full)
    parent = tmp_path / "exports"
    parent.mkdir()
    with pytest.raises(OSError, match="No space left"):
        save_hf_dir(parent / "model", tiny_config, our_params)
    assert os.listdir(parent) == []

    # an existing empty target stays an empty directory
    (parent / "model").mkdir()
    with pytest.raises(OSError):
        save_hf_dir(parent / "model", tiny_config, our_params)
    assert os.listdir(parent) == ["model"] and os.listdir(parent / "model") == []


def test_failed_save_on_bad_params_leaves_nothing_behind(tmp_path, tiny_config, our_params):
    broken = {k: v for k, v in our_params.items() if k != "ln_f"}
    with pytest.raises(Exception):
        save_hf_dir(tmp_path / "model", tiny_config, broken)
    assert os.listdir(tmp_path) == []


def test_save_rejects_params_that_do_not_match_config(tmp_path, tiny_config, our_params):
    one_layer = dataclasses.replace(tiny_config, n_layer=1)
    with pytest.raises(ExportError, match="n_layer|shape"):
        save_hf_dir(tmp_path / "model", one_layer, our_params)
    assert os.listdir(tmp_path) == []


def test_refuses_output_path_that_is_a_file(tmp_path, tiny_config, our_params):
    target = tmp_path / "model"
    target.write_text("not a directory\n")
    try:
        with pytest.raises(ExportError, match="model"):
            save_hf_dir(target, tiny_config, our_params)
    finally:
        assert target.read_text() == "not a directory\n"
        assert os.listdir(tmp_path) == ["model"]


# ----------------------------------------------------------------------------------------------
# loading bad directories


def test_missing_config_json(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(ExportError, match=r"no config\.json"):
        load_hf_dir(path)


def test_invalid_config_json(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(ExportError, match=r"config\.json.*not valid JSON"):
        load_hf_dir(path)


def test_missing_safetensors(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ExportError, match=r"no \.safetensors file"):
        load_hf_dir(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors(tmp_path, hf_tiny, damage):
    path = _copy_of(hf_tiny.path, tmp_path)
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x07" * 64)
    with pytest.raises(ExportError) as e:
        load_hf_dir(path)
    assert "model.safetensors" in str(e.value) and "not a readable safetensors file" in str(e.value)


def test_wrong_tensor_shape(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    name = "transformer.h.1.mlp.c_fc.weight"
    assert tensors[name].shape == (64, 256)
    tensors[name] = np.ascontiguousarray(tensors[name].T)  # nn.Linear layout instead of Conv1D
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportError) as e:
        load_hf_dir(path)
    msg = str(e.value)
    assert "h.1.mlp.c_fc.weight" in msg and "(256, 64)" in msg and "(64, 256)" in msg


def test_config_does_not_match_tensors(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    hf = json.loads((path / "config.json").read_text())
    hf["vocab_size"] = 301
    (path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ExportError, match=r"wte\.weight.*\(300, 64\).*\(301, 64\)"):
        load_hf_dir(path)


def test_missing_tensor(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["transformer.h.1.attn.c_proj.bias"]
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportError, match=r"h\.1\.attn\.c_proj\.bias.*missing"):
        load_hf_dir(path)


def test_untied_lm_head_is_refused(tmp_path, hf_tiny):
    path = _copy_of(hf_tiny.path, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1.0
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportError, match="lm_head"):
        load_hf_dir(path)


@pytest.mark.parametrize(
    "key, value, words",
    [("activation_function", "relu", ["activation_function", "'relu'", "gelu_new"]),
     ("model_type", "gpt_neo", ["model_type", "'gpt_neo'"]),
     ("n_inner", 100, ["n_inner=100", "256"]),
     ("scale_attn_by_inverse_layer_idx", True, ["scale_attn_by_inverse_layer_idx"]),
     ("tie_word_embeddings", False, ["tie_word_embeddings"])],
)
def test_unsupported_config(tmp_path, hf_tiny, key, value, words):
    path = _copy_of(hf_tiny.path, tmp_path)
    hf = json.loads((path / "config.json").read_text())
    hf[key] = value
    (path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ExportError) as e:
        load_hf_dir(path)
    for w in words:
        assert w in str(e.value)


def test_load_of_good_copy_works(tmp_path, hf_tiny, tiny_params, tiny_config):
    """Control for the error tests above: the undamaged copy loads, and to the same params."""
    config, params = load_hf_dir(_copy_of(hf_tiny.path, tmp_path))
    assert config == tiny_config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, tiny_params)
