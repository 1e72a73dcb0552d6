"""Ablation switches: the default is today's GPT-2 bit for bit, each switch changes only what it
names, and GPT-1's arithmetic matches Hugging Face's OpenAIGPTLMHeadModel (PyTorch CPU)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib

import jax
import numpy as np
import pytest

from gpt2_jax.config import ABLATION_SWITCHES, ConfigError, ModelConfig, TrainConfig, apply_overrides, from_dict, to_dict

DATA = pathlib.Path(__file__).parent / "data"

# One value away from GPT-2 per switch, and what it may change in the parameter tree.
SWITCHED = {
    "ln_placement": ("post", set()),
    "final_ln": (False, {"ln_f/bias", "ln_f/scale"}),
    "residual_scaling": (False, {"h/attn/c_proj/kernel", "h/mlp/c_proj/kernel"}),
    "tied_embeddings": (False, {"lm_head/kernel"}),
    "positions": ("sinusoidal", {"wpe/embedding"}),
    "activation": ("relu", set()),
}


def _flat(params) -> dict[str, np.ndarray]:
    return {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_every_switch_is_covered():
    assert set(SWITCHED) == set(ABLATION_SWITCHES)


def test_default_model_is_unchanged(tiny_config, init, forward, tokens):
    """Parameters (sha256 of each leaf) and logits equal those main's model.py computed before the
    switches existed (tests/data/default_model_reference.json, its provenance inside)."""
    ref = json.loads((DATA / "default_model_reference.json").read_text())
    assert tiny_config == ModelConfig(n_vocab=300, n_ctx=64, n_embd=64, n_layer=2, n_head=4)
    params = _flat(init(tiny_config, 0))
    assert {k: list(v.shape) for k, v in params.items()} == ref["shapes"]
    assert {k: hashlib.sha256(v.astype(np.float32).tobytes()).hexdigest() for k, v in params.items()} == ref["sha256"]
    t = np.random.RandomState(0).randint(0, 300, size=(2, 16)).astype(np.int32)
    logits = forward(tiny_config, init(tiny_config, 0), t)
    np.testing.assert_allclose(logits[0, :, :8], np.array(ref["logits_0_first8"]), rtol=0, atol=1e-6)
    assert math.isclose(float(logits[..., :300].sum()), ref["logits_sum"], rel_tol=0, abs_tol=1e-3)
    assert tiny_config.ablations() == {}


@pytest.mark.parametrize("name", sorted(SWITCHED))
def test_switch_changes_only_what_it_names(name, tiny_config, init, forward, tokens):
    value, changed = SWITCHED[name]
    config = dataclasses.replace(tiny_config, **{name: value})
    assert config.ablations() == {name: value}
    base, new = _flat(init(tiny_config, 0)), _flat(init(config, 0))
    removed, added = set(base) - set(new), set(new) - set(base)
    assert removed | added == (changed if name != "residual_scaling" else set())
    same = [k for k in set(base) & set(new) if np.array_equal(base[k], new[k])]
    assert set(base) & set(new) - set(same) == (changed if name == "residual_scaling" else set())
    if name == "residual_scaling":  # the same draw, unscaled: exactly sqrt(2 L) larger
        for k in changed:
            np.testing.assert_allclose(new[k], base[k] * math.sqrt(2 * config.n_layer), rtol=1e-6)
    if name == "tied_embeddings":  # padded vocabulary columns start at zero, like wte's rows
        head = new["lm_head/kernel"]
        assert head.shape == (config.n_embd, config.n_vocab_padded)
        assert not head[:, config.n_vocab:].any() and head[:, : config.n_vocab].std() == pytest.approx(0.02, rel=0.05)
    t = tokens(config)
    a, b = forward(tiny_config, init(tiny_config, 0), t), forward(config, init(config, 0), t)
    assert np.isfinite(b[..., : config.n_vocab]).all()
    assert np.abs(a - b)[..., : config.n_vocab].max() > 1e-4, "the switch changed nothing in the forward pass"


def test_untied_head_with_the_embedding_copied_equals_tied(tiny_config, init, forward, tokens):
    untied = dataclasses.replace(tiny_config, tied_embeddings=False)
    params = jax.tree_util.tree_map(np.asarray, init(untied, 0))
    params = {**params, "lm_head": {"kernel": params["wte"]["embedding"].T.copy()}}
    tied = {k: v for k, v in params.items() if k != "lm_head"}
    t = tokens(tiny_config)
    np.testing.assert_allclose(forward(untied, params, t), forward(tiny_config, tied, t), rtol=1e-5, atol=1e-5)


def test_sinusoidal_table_matches_huggingface():
    import torch
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    from gpt2_jax.model import sinusoidal_positions

    for n, d in ((64, 64), (17, 10)):
        out = torch.empty(n, d)
        create_sinusoidal_embeddings(n, d, out)
        np.testing.assert_allclose(np.asarray(sinusoidal_positions(n, d)), out.numpy(), atol=2e-5)


def _openai_gpt(seed: int, afn: str, config: ModelConfig):
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.OpenAIGPTConfig(
        vocab_size=config.n_vocab, n_positions=config.n_ctx, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, afn=afn, layer_norm_epsilon=config.layer_norm_epsilon, initializer_range=0.1,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.OpenAIGPTLMHeadModel(hf_config).eval()
    with torch.no_grad():  # HF starts biases at 0 and LN scales at 1, which would hide a swapped bias
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith(("ln_1.weight", "ln_2.weight")) else 0.0) + 0.1 * torch.randn_like(p))
    return model


def _params_from_openai_gpt(model, config: ModelConfig) -> dict:
    from gpt2_jax.export.hf import _LAYER_NAMES

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    wte = np.zeros((config.n_vocab_padded, config.n_embd), np.float32)
    wte[: config.n_vocab] = state["transformer.tokens_embed.weight"]
    params = {"wte": {"embedding": wte}, "wpe": {"embedding": state["transformer.positions_embed.weight"]}, "h": {}}
    for path, hf_name in _LAYER_NAMES.items():
        node = params["h"]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.stack([state[f"transformer.h.{i}.{hf_name}"] for i in range(config.n_layer)])
    return params


# OpenAIGPT's "gelu" is its gelu_new (tanh form), as ours.
@pytest.mark.parametrize("afn,activation", [("gelu", "gelu"), ("relu", "relu")])
def test_gpt1_switches_equal_huggingface_openai_gpt(afn, activation, tiny_config, forward, tokens):
    """post-LN + no final LN (+ residual_scaling off, an init-only switch) is GPT-1's forward pass:
    logits equal OpenAIGPTLMHeadModel's (tied head, learned positions) for the same weights."""
    import torch

    config = dataclasses.replace(tiny_config, ln_placement="post", final_ln=False, residual_scaling=False,
                                 activation=activation)
    model = _openai_gpt(3, afn, config)
    t = tokens(config)
    with torch.no_grad():
        want = model(torch.from_numpy(t.astype(np.int64))).logits.numpy()
    got = forward(config, _params_from_openai_gpt(model, config), t)
    np.testing.assert_allclose(got[..., : config.n_vocab], want, rtol=1e-4, atol=1e-4)
    # and the GPT-2 arrangement of the same weights is not GPT-1's
    pre = forward(dataclasses.replace(config, ln_placement="pre"), _params_from_openai_gpt(model, config), t)
    assert np.abs(pre[..., : config.n_vocab] - want).max() > 1e-2


@pytest.mark.parametrize("key,value,valid", [
    ("ln_placement", "middle", "('pre', 'post')"), ("positions", "rotary", "('learned', 'sinusoidal')"),
    ("activation", "swish", "('gelu', 'relu')"),
])
def test_unknown_switch_value_names_the_valid_ones(key, value, valid):
    with pytest.raises(ConfigError, match=f"model.{key}='{value}' is not one of " + valid.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(TrainConfig(), [f"model.{key}={value}"])
    with pytest.raises(ConfigError, match="is not a boolean"):
        apply_overrides(TrainConfig(), ["model.final_ln=maybe"])


def test_unknown_switch_value_through_the_cli(capsys):
    from gpt2_jax.cli import main

    assert main(["train", "model=tiny", "model.ln_placement=middle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: model.ln_placement='middle' is not one of ('pre', 'post')"]


def test_old_config_without_switches_loads():
    old = to_dict(TrainConfig())
    for name in ABLATION_SWITCHES:
        del old["model"][name]
    assert from_dict(TrainConfig, old) == TrainConfig()


def test_old_checkpoint_without_switches_restores(tiny_run, tmp_path, monkeypatch):
    """A checkpoint whose saved config predates the switches (written by this version's save with
    the switch keys dropped, as an older version wrote it) restores as a GPT-2 model."""
    from gpt2_jax import checkpoint

    run, result = tiny_run
    real_to_dict = checkpoint.to_dict

    def old_to_dict(cfg):
        tree = real_to_dict(cfg)
        for name in ABLATION_SWITCHES:
            tree["model"].pop(name)
        return tree

    monkeypatch.setattr(checkpoint, "to_dict", old_to_dict)
    mngr = checkpoint.manager(tmp_path / "ckpt")
    checkpoint.save(mngr, 3, run.train, result.params, None, {})
    checkpoint.wait(mngr)
    mngr.close()
    monkeypatch.undo()
    step, meta, _ = checkpoint.restore_meta(tmp_path / "ckpt")
    assert "ln_placement" not in meta["config"]["model"]
    step, cfg, params, _ = checkpoint.restore(tmp_path / "ckpt")
    assert step == 3 and cfg == run.train and cfg.model.ablations() == {}
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, jax.device_get(result.params)))


def test_resume_refuses_another_architecture(tiny_run):
    from gpt2_jax.train import _check_resumable

    run, _ = tiny_run
    for name, (value, _) in SWITCHED.items():
        other = dataclasses.replace(run.train, model=dataclasses.replace(run.train.model, **{name: value}))
        with pytest.raises(ConfigError, match=f"different model .*model.{name}"):
            _check_resumable(run.train, other, "WORKDIR", 12)


def test_hf_export_refuses_switched_models(tiny_config, init, tmp_path):
    from gpt2_jax.export import ExportError, save_hf_dir

    config = dataclasses.replace(tiny_config, ln_placement="post")
    with pytest.raises(ExportError, match="ln_placement.*no GPT2LMHeadModel equivalent"):
        save_hf_dir(tmp_path / "hf", config, init(config, 0))
    assert not (tmp_path / "hf").exists()


def test_param_counts_follow_the_switches(tiny_config, init):
    from gpt2_jax.model import count_params, non_embedding_params

    for name, (value, _) in SWITCHED.items():
        config = dataclasses.replace(tiny_config, **{name: value})
        n = count_params(init(config, 0), config)
        D, V = config.n_embd, config.n_vocab
        embeddings = V * D * (1 if config.tied_embeddings else 2) + (config.n_ctx * D if config.positions == "learned" else 0)
        assert n == non_embedding_params(config) + embeddings, name


ALL_SWITCHED = {name: value for name, (value, _) in SWITCHED.items()}


def test_cached_greedy_decoding_with_every_switch_equals_the_full_forward(tiny_config, init, forward, tokens):
    """The KV-cache path (prefill + one token at a time) computes what the full forward does,
    with every switch away from GPT-2 at once (post-LN, sinusoidal positions, untied head, ...)."""
    from gpt2_jax.sample import generate

    config = dataclasses.replace(tiny_config, **ALL_SWITCHED)
    params = init(config, 0)
    prompt = tokens(config, batch=1, seq=5)[0]
    out = generate(params, config, prompt, max_new_tokens=6, greedy=True)[0]
    logits = forward(config, params, out[None, :-1].astype(np.int32))[0]
    np.testing.assert_array_equal(out[5:], logits[4:].argmax(-1))


def test_switched_parameters_shard_over_a_mesh(tiny_config):
    from gpt2_jax import sharding
    from gpt2_jax.config import MeshConfig
    from gpt2_jax.model import init_params

    config = dataclasses.replace(tiny_config, **ALL_SWITCHED)
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=4, tensor=2, rules="fsdp_tp"))
    specs = sharding.param_shardings(abstract, config, mesh, "fsdp_tp")
    assert tuple(specs["lm_head"]["kernel"].spec) == ("fsdp", "tensor")  # [D, V]: like wte^T
    assert "wpe" not in specs and "ln_f" not in specs
