"""μP (model.parametrization=mup): config, base-width equivalence, optimizer multipliers, the
attention scale in the flash kernels, exports through Hugging Face, and the coordinate check."""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt2_jax import mup
from gpt2_jax.config import ConfigError, ModelConfig, OptimConfig, TrainConfig, apply_overrides
from gpt2_jax.model import init_params
from gpt2_jax.optim import make_optimizer


def _mup(config: ModelConfig, base: int) -> ModelConfig:
    return dataclasses.replace(config, parametrization="mup", mup_base_width=base)


# ----------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("overrides, words", [
    (["model.parametrization=mu"], "model.parametrization='mu' is not one of ('sp', 'mup')"),
    (["model.parametrization=mup"], "needs model.mup_base_width"),
    (["model.parametrization=mup", "model.mup_base_width=30", "model.n_head=4"], "not divisible by model.n_head=4"),
    (["model.mup_base_width=-1"], "must be >= 0"),
])
def test_bad_parametrization_settings_are_one_clear_error(overrides, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        apply_overrides(TrainConfig(), overrides)


def test_parametrization_override_and_multipliers():
    cfg = apply_overrides(TrainConfig(), ["model=tiny", "model.parametrization=mup", "model.mup_base_width=32"])
    m = cfg.model
    assert (m.n_embd, m.parametrization, m.mup_base_width) == (64, "mup", 32)
    assert mup.width_multiplier(m) == 2.0 and mup.output_multiplier(m) == 0.5
    assert mup.hidden_init_scale(m) == pytest.approx(1 / math.sqrt(2))
    # 1/d attention with the base correction: H = 32, base H0 = 16 -> sqrt(16)/32
    assert mup.attention_scale(m) == pytest.approx(4 / 32)
    sp = cfg.model.__class__(**{**dataclasses.asdict(m), "parametrization": "sp"})
    assert mup.attention_scale(sp) is None and mup.output_multiplier(sp) is None and mup.hidden_init_scale(sp) is None


# ----------------------------------------------------------------------------------------------
# at the base width μP is SP; above it, the init and the optimizer follow Table 3


def test_at_base_width_mup_equals_sp(tiny_config, init, forward, tokens):
    at_base = _mup(tiny_config, tiny_config.n_embd)
    p_sp, p_mup = init(tiny_config, seed=1), init(at_base, seed=1)
    for a, b in zip(jax.tree_util.tree_leaves(p_sp), jax.tree_util.tree_leaves(p_mup)):
        np.testing.assert_array_equal(a, b)
    t = tokens(tiny_config, seed=2)
    np.testing.assert_allclose(forward(at_base, p_mup, t), forward(tiny_config, p_sp, t), rtol=1e-5, atol=1e-5)


def test_hidden_init_std_scales_as_one_over_fan_in():
    wide = _mup(ModelConfig(n_vocab=64, n_ctx=16, n_embd=256, n_head=4, n_layer=1), 64)  # m = 4
    params = jax.jit(lambda k: init_params(wide, k))(jax.random.key(0))
    assert np.std(np.asarray(params["h"]["mlp"]["c_fc"]["kernel"])) == pytest.approx(0.02 / 2, rel=0.02)
    assert np.std(np.asarray(params["wte"]["embedding"])[:64]) == pytest.approx(0.02, rel=0.05)  # embeddings unscaled


def test_optimizer_scales_only_hidden_kernels_by_base_over_width(tiny_config, init):
    wide = _mup(tiny_config, 16)  # m = 4
    params = init(tiny_config, seed=0)
    grads = jax.tree_util.tree_map(lambda p: jnp.sin(jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)), params)
    optim = OptimConfig(lr=1e-3, warmup_steps=0, weight_decay=0.1)
    steps, states = {}, {}
    for name, model in (("sp", tiny_config), ("mup", wide)):
        tx = make_optimizer(optim, 100, model)
        updates, states[name] = jax.jit(tx.update)(grads, tx.init(params), params)
        steps[name] = dict(jax.tree_util.tree_flatten_with_path(updates)[0])
    hidden = 0
    for path, u_sp in steps["sp"].items():
        names = tuple(k.key for k in path)
        ratio = 0.25 if names[0] == "h" and names[-1] == "kernel" else 1.0
        hidden += ratio != 1.0
        np.testing.assert_allclose(steps["mup"][path], ratio * u_sp, rtol=1e-6, atol=1e-12, err_msg=str(names))
    assert hidden == 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    # the multipliers hold no state: the same moments as SP's, no more memory
    shapes = {k: [x.shape for x in jax.tree_util.tree_leaves(v)] for k, v in states.items()}
    assert shapes["sp"] == shapes["mup"]


# ----------------------------------------------------------------------------------------------
# the attention scale reaches the flash kernels (forward and backward)


def test_flash_kernels_take_the_scale():
    from gpt2_jax import kernels
    from gpt2_jax.attention import causal_mask, reference_attention

    q, k, v = (jax.random.normal(jax.random.key(i), (1, 32, 2, 16)) for i in range(3))
    scale = 0.03  # far from 1/sqrt(16), so a kernel that ignores it fails
    mask = causal_mask(jnp.arange(32), jnp.arange(32))[None, None]
    loss = lambda f: (lambda q, k, v: jnp.sum(f(q, k, v) * jnp.cos(jnp.arange(16.0))))
    ref_f = lambda q, k, v: reference_attention(q, k, v, mask, scale=scale)
    ker_f = lambda q, k, v: kernels.flash_attention(q, k, v, causal=True, scale=scale)
    np.testing.assert_allclose(ker_f(q, k, v), ref_f(q, k, v), atol=2e-5)
    assert np.abs(np.asarray(ref_f(q, k, v)) - np.asarray(reference_attention(q, k, v, mask))).max() > 1e-2
    for g_ker, g_ref in zip(jax.grad(loss(ker_f), (0, 1, 2))(q, k, v), jax.grad(loss(ref_f), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(g_ker, g_ref, atol=5e-5)


# ----------------------------------------------------------------------------------------------
# checkpoints and exports keep the function


@pytest.fixture(scope="module")
def mup_model(tiny_config, init):
    """(μP config at m = 2, perturbed params as numpy): biases and LayerNorms away from 0/1."""
    config = _mup(tiny_config, tiny_config.n_embd // 2)
    params = jax.tree_util.tree_map(np.asarray, init(config, seed=5))
    rng = np.random.RandomState(5)
    params = jax.tree_util.tree_map(lambda x: (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32), params)
    params["wte"]["embedding"][config.n_vocab:] = 0.0
    return config, params


def test_exported_mup_model_is_the_same_function_in_transformers(tmp_path, mup_model, forward, tokens):
    import torch
    import transformers
    from _export_fixtures import write_checkpoint

    from gpt2_jax.export import ExportError, export_checkpoint, read_model, save_hf_dir

    config, params = mup_model
    ckpt = write_checkpoint(tmp_path / "ckpt", config, params, "unknown")
    export_checkpoint(ckpt, "hf", tmp_path / "hf")
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    t = tokens(config, seed=4)
    with torch.no_grad():
        theirs = model(torch.from_numpy(t.astype(np.int64))).logits.numpy()
    ours = forward(config, params, t)[..., : config.n_vocab]
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)
    # the same weights read as SP compute something else: the folding is what makes them agree
    as_sp = dataclasses.replace(config, parametrization="sp", mup_base_width=0)
    assert np.abs(forward(as_sp, params, t)[..., : config.n_vocab] - ours).max() > 0.05
    # formats that hold only GPT-2's arithmetic refuse an unfolded μP model ...
    with pytest.raises(ExportError, match="fold them first with gpt2_jax.mup.to_standard"):
        save_hf_dir(tmp_path / "unfolded", config, params)
    # ... and our own safetensors format keeps its config, so nothing needs folding
    export_checkpoint(ckpt, "safetensors", tmp_path / "model.safetensors")
    back_config, back_params, _ = read_model(tmp_path / "model.safetensors", "safetensors")
    assert back_config == config
    np.testing.assert_array_equal(back_params["h"]["attn"]["c_attn"]["kernel"], params["h"]["attn"]["c_attn"]["kernel"])


def test_mup_without_final_ln_cannot_be_folded(tiny_config):
    with pytest.raises(ConfigError, match="final_ln=false"):
        mup.to_standard(dataclasses.replace(_mup(tiny_config, 32), final_ln=False), {})


def test_chunked_loss_applies_the_readout_multiplier(mup_model, tokens):
    from gpt2_jax.lm_head_loss import chunked_cross_entropy
    from gpt2_jax.model import GPT
    from gpt2_jax.train import cross_entropy

    config, params = mup_model
    t = tokens(config, seed=6, seq=17)

    @jax.jit
    def both(params, t):
        logits, _ = GPT(config).apply({"params": params}, t[:, :-1])
        hidden, _ = GPT(config).apply({"params": params}, t[:, :-1], return_hidden=True)
        return cross_entropy(logits, t[:, 1:]), chunked_cross_entropy(hidden, params["wte"]["embedding"], t[:, 1:],
                                                                     config, 8)

    plain, chunked = both(params, t)
    np.testing.assert_allclose(chunked, plain, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# the LR-transfer table (gpt2_jax.mup_transfer) on a synthetic sweep with known optima


def test_transfer_table_finds_known_optima(tmp_path):
    from gpt2_jax.mup_transfer import format_table, optimum_lrs, plot_transfer, read_table, transfer_spread, write_table

    lrs = [2.0 ** e for e in range(-10, -4)]
    rows = []
    for width, best_log2 in ((32, -7.25), (64, -8.25), (128, -9.25)):  # SP-like: the optimum halves per doubling
        for lr in lrs:
            loss = 3.0 + 0.1 * (math.log2(lr) - best_log2) ** 2
            rows.append({"parametrization": "sp", "width": width, "lr": lr, "val_loss": loss})
            rows.append({"parametrization": "mup", "width": width, "lr": lr,
                         "val_loss": loss if width == 32 else (math.inf if lr == lrs[-1] else 3.0 + 0.1 * (math.log2(lr) + 7.25) ** 2)})
    rows = read_table(write_table(rows, tmp_path / "t.csv"))
    sp, mu = optimum_lrs(rows, "sp"), optimum_lrs(rows, "mup")
    assert [math.log2(o["refined"]) for o in sp.values()] == pytest.approx([-7.25, -8.25, -9.25])
    assert transfer_spread(sp) == 4.0 and transfer_spread(sp, "refined") == pytest.approx(4.0)
    assert transfer_spread(mu) == 1.0 and not any(o["edge"] for o in mu.values())
    assert "diverge" in format_table(rows) and "spread of the optimum across widths: 4.0x" in format_table(rows)
    plot_transfer(rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_transfer_optimum_is_taken_on_the_seed_mean():
    from gpt2_jax.mup_transfer import optimum_lrs

    # Two seeds whose own minima sit at 2^-8 and 2^-6; their mean is a parabola centred on 2^-7.
    lrs = [2.0 ** e for e in range(-10, -3)]
    rows = [{"parametrization": "mup", "width": 64, "lr": lr, "seed": seed,
             "val_loss": 3.0 + 0.1 * (math.log2(lr) - centre) ** 2}
            for seed, centre in ((0, -8), (1, -6)) for lr in lrs]
    best = optimum_lrs(rows, "mup")[64]
    assert math.log2(best["grid"]) == -7 and math.log2(best["refined"]) == pytest.approx(-7)
    assert [math.log2(lr) for lr in best["seed_grid"]] == [-8, -6]
    assert best["loss"] == pytest.approx(3.1) and best["sem"] == pytest.approx(0.0, abs=1e-12)
    # one diverged seed makes that LR's mean inf, never its best
    rows.append({"parametrization": "mup", "width": 64, "lr": 2.0 ** -7, "seed": 2, "val_loss": math.nan})
    assert math.log2(optimum_lrs(rows, "mup")[64]["grid"]) != -7


# ----------------------------------------------------------------------------------------------
# coordinate check (Yang et al. 2022): a few Adam steps at three widths


COORD_WIDTHS = (32, 64, 128)
COORD_B, COORD_T, COORD_STEPS = 4, 16, 4


def _coordinate_sizes(model: ModelConfig) -> dict[str, np.ndarray]:
    """Activation sizes after COORD_STEPS real train steps (train.make_train_step) at lr 1e-2 on
    bundled Shakespeare bytes, measured on a held-out batch; one compile per width."""
    from gpt2_jax.coord_check import activation_sizes
    from gpt2_jax.data.prepare import bundled_corpus
    from gpt2_jax.train import TrainState, make_train_step

    data = np.frombuffer(bundled_corpus().read_bytes()[:200_000], np.uint8).astype(np.int32)
    starts = np.random.RandomState(0).randint(0, len(data) - COORD_T - 1, size=(COORD_STEPS + 1, COORD_B))
    batches = np.stack([[data[s:s + COORD_T + 1] for s in row] for row in starts])  # [S + 1, B, T + 1]
    # constant LR (no warmup, no decay within the run), no weight decay: only the parametrization differs
    cfg = TrainConfig(model=model, optim=OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0, decay_steps=10**6),
                      steps=10**6, batch_size=COORD_B)
    tx = make_optimizer(cfg.optim, cfg.steps, model)
    step = make_train_step(cfg, tx, jax.random.key(1))

    @jax.jit
    def run(batches):
        params = init_params(model, jax.random.key(0))
        state, _ = jax.lax.scan(step, TrainState(jnp.zeros((), jnp.int32), params, tx.init(params)), batches[:-1])
        return activation_sizes(model, state.params, batches[-1][:, :-1])

    return {k: np.atleast_1d(np.asarray(v)) for k, v in run(batches).items()}


@pytest.mark.slow
def test_coordinate_check_flat_under_mup_growing_under_sp():
    from gpt2_jax.coord_check import log_width_slope

    base = COORD_WIDTHS[0]
    sizes = {}
    for parametrization in ("sp", "mup"):
        for width in COORD_WIDTHS:
            model = ModelConfig(n_vocab=257, n_ctx=COORD_T, n_embd=width, n_head=2, n_layer=2, embd_pdrop=0.0,
                                attn_pdrop=0.0, resid_pdrop=0.0, parametrization=parametrization,
                                mup_base_width=base if parametrization == "mup" else 0)
            if parametrization == "mup" and width == base:  # μP at its base width is SP (tested above): share it
                sizes[parametrization, width] = sizes["sp", width]
                continue
            sizes[parametrization, width] = _coordinate_sizes(model)
    slopes = {}
    for parametrization in ("sp", "mup"):
        for key in ("logits", "attn_out", "mlp_out"):
            per_width = np.stack([sizes[parametrization, w][key] for w in COORD_WIDTHS])  # [widths, layers]
            for layer in range(per_width.shape[1]):
                slopes[parametrization, f"{key}[{layer}]"] = log_width_slope(COORD_WIDTHS, per_width[:, layer])
    report = {k: round(v, 2) for k, v in slopes.items()}
    # Measured (2-core CPU): SP slopes 0.85 (logits) and 1.5-1.8 (attn/mlp outputs): the
    # activations grow about linearly with width after 4 Adam steps; μP slopes within +-0.3.
    for (parametrization, name), slope in slopes.items():
        if parametrization == "mup":
            assert abs(slope) < 0.4, report
        elif name.startswith(("attn_out", "mlp_out")):
            assert slope > 1.0, report
        else:
            assert slope > 0.5, report
