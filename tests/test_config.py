"""gpt2_jax.config: presets, key=value overrides, experiment files, dict round trips."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from gpt2_jax import config as C
from gpt2_jax.config import ConfigError, DataConfig, ModelConfig, TrainConfig, apply_overrides


# ----------------------------------------------------------------------------------------------
# presets


@pytest.mark.parametrize(
    "name, n_layer, n_embd, n_head",
    [("gpt2", 12, 768, 12), ("gpt2-medium", 24, 1024, 16), ("gpt2-large", 36, 1280, 20), ("gpt2-xl", 48, 1600, 25)],
)
def test_paper_presets(name, n_layer, n_embd, n_head):
    m = C.preset(name)
    assert (m.n_layer, m.n_embd, m.n_head) == (n_layer, n_embd, n_head)
    # OpenAI's hparams.json values, shared by all four released models.
    assert (m.n_vocab, m.n_ctx, m.layer_norm_epsilon) == (50257, 1024, 1e-5)
    assert m.n_vocab_padded == 50304 and m.n_vocab_padded % 128 == 0
    assert m.head_dim * m.n_head == m.n_embd and m.head_dim == 64


def test_small_presets():
    tiny, mini = C.preset("tiny"), C.preset("mini")
    assert (tiny.n_layer, tiny.n_embd, tiny.n_head, tiny.n_ctx) == (2, 64, 2, 128)
    assert (mini.n_layer, mini.n_embd, mini.n_head, mini.n_ctx) == (4, 128, 4, 128)
    assert set(C.PRESETS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", "mini"}


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError) as e:
        C.preset("gpt3")
    msg = str(e.value)
    assert "'gpt3'" in msg
    for name in C.PRESETS:
        assert name in msg


def test_vocab_padding():
    assert ModelConfig(n_vocab=300).n_vocab_padded == 384
    assert ModelConfig(n_vocab=256).n_vocab_padded == 256
    assert ModelConfig(n_vocab=1000, vocab_multiple=64).n_vocab_padded == 1024
    assert ModelConfig(n_vocab=1, vocab_multiple=1).n_vocab_padded == 1


# ----------------------------------------------------------------------------------------------
# overrides


@pytest.mark.parametrize(
    "overrides",
    [["model=gpt2", "model.n_layer=4"], ["model.n_layer=4", "model=gpt2"]],
    ids=["preset-first", "preset-last"],
)
def test_preset_then_field_in_either_order(overrides):
    cfg = apply_overrides(TrainConfig(), overrides)
    assert cfg.model == dataclasses.replace(C.preset("gpt2"), n_layer=4)


def test_override_types_are_parsed():
    cfg = apply_overrides(
        TrainConfig(),
        ["steps=7", "optim.lr=3e-4", "model.scan_layers=false", "model.dtype=bfloat16",
         "workdir=/tmp/x=y", "optim.grad_clip=2", "model.resid_pdrop=0"],
    )
    assert cfg.steps == 7 and type(cfg.steps) is int
    assert cfg.optim.lr == 3e-4 and type(cfg.optim.lr) is float
    assert cfg.model.scan_layers is False
    assert cfg.model.dtype == "bfloat16"
    assert cfg.workdir == "/tmp/x=y"  # only the first '=' splits
    assert cfg.optim.grad_clip == 2.0 and type(cfg.optim.grad_clip) is float
    assert cfg.model.resid_pdrop == 0.0
    # untouched fields keep their defaults
    assert cfg.model.n_layer == TrainConfig().model.n_layer


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("1", True), ("yes", True),
                                         ("false", False), ("0", False), ("off", False)])
def test_bool_spellings(text, value):
    assert apply_overrides(TrainConfig(), [f"model.scan_layers={text}"]).model.scan_layers is value


def test_overrides_do_not_mutate_input():
    base = TrainConfig()
    apply_overrides(base, ["steps=3", "model.n_layer=1"])
    assert base == TrainConfig()


def test_unknown_top_level_key_names_key_and_choices():
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainConfig(), ["stepz=3"])
    msg = str(e.value)
    assert "'stepz'" in msg
    assert "did you mean 'steps'" in msg
    for field in ("workdir", "model", "batch_size", "grad_accum"):
        assert field in msg


def test_nested_unknown_key_names_key_and_choices():
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainConfig(), ["model.n_layr=3"])
    msg = str(e.value)
    assert "'model.n_layr'" in msg
    assert "'model.n_layer'" in msg  # the suggestion carries the prefix
    for field in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "scan_layers"):
        assert field in msg
    # the valid keys are those of ModelConfig, not of TrainConfig
    assert "batch_size" not in msg


def test_unknown_key_without_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.zzz'.*lr"):
        apply_overrides(TrainConfig(), ["optim.zzz=1"])


def test_sub_key_of_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="steps"):
        apply_overrides(TrainConfig(), ["steps.x=1"])


def test_group_without_field_is_an_error():
    with pytest.raises(ConfigError, match="optim"):
        apply_overrides(TrainConfig(), ["optim=fast"])


@pytest.mark.parametrize(
    "override, words",
    [("model.n_layer=four", ["model.n_layer", "'four'", "integer"]),
     ("model.n_layer=2.5", ["model.n_layer", "'2.5'", "integer"]),
     ("optim.lr=fast", ["optim.lr", "'fast'", "number"]),
     ("model.scan_layers=maybe", ["model.scan_layers", "'maybe'", "boolean"])],
)
def test_wrong_type_names_key_and_value(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainConfig(), [override])
    for w in words:
        assert w in str(e.value)


def test_not_key_value():
    with pytest.raises(ConfigError, match="'steps'.*key=value"):
        apply_overrides(TrainConfig(), ["steps"])


def test_model_nonexistent_lists_presets():
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainConfig(), ["model=nonexistent"])
    msg = str(e.value)
    assert "'nonexistent'" in msg
    for name in C.PRESETS:
        assert name in msg


def test_override_values_are_validated():
    with pytest.raises(ConfigError, match="float16"):
        apply_overrides(TrainConfig(), ["model.dtype=float16"])
    with pytest.raises(ConfigError, match="model.remat"):
        apply_overrides(TrainConfig(), ["model.remat=some"])
    with pytest.raises(ConfigError, match=r"model.n_head=5"):
        apply_overrides(TrainConfig(), ["model.n_head=5"])  # mini: n_embd=128


def test_validation_sees_all_overrides_together():
    a = apply_overrides(TrainConfig(), ["model.n_ctx=256", "data.seq_len=256"])
    b = apply_overrides(TrainConfig(), ["data.seq_len=256", "model.n_ctx=256"])
    assert a == b and a.seq_len == 256


# ----------------------------------------------------------------------------------------------
# validation of impossible shapes


def test_n_embd_not_divisible_by_n_head():
    with pytest.raises(ConfigError) as e:
        ModelConfig(n_embd=100, n_head=3)
    msg = str(e.value)
    assert "n_embd=100" in msg and "n_head=3" in msg
    assert "[1, 2, 4, 5, 10" in msg  # the suggested divisors


@pytest.mark.parametrize("field, value", [("n_layer", 0), ("n_vocab", -1), ("attn_pdrop", 1.0), ("embd_pdrop", -0.1),
                                          ("layer_norm_epsilon", 0.0), ("dtype", "float16"), ("attention", "flash")])
def test_bad_model_fields(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{field: value})


def test_seq_len_longer_than_context():
    model = ModelConfig(n_ctx=128)
    with pytest.raises(ConfigError) as e:
        TrainConfig(model=model, data=DataConfig(seq_len=129))
    assert "data.seq_len=129" in str(e.value) and "n_ctx=128" in str(e.value)
    assert TrainConfig(model=model, data=DataConfig(seq_len=128)).seq_len == 128
    assert TrainConfig(model=model, data=DataConfig(seq_len=0)).seq_len == 128  # 0 = n_ctx
    with pytest.raises(ConfigError, match="seq_len"):
        apply_overrides(TrainConfig(), ["data.seq_len=1000"])  # mini: n_ctx=128


def test_batch_size_must_divide_by_grad_accum():
    with pytest.raises(ConfigError) as e:
        TrainConfig(batch_size=10, grad_accum=4)
    assert "batch_size=10" in str(e.value) and "grad_accum=4" in str(e.value)
    assert TrainConfig(batch_size=12, grad_accum=4).grad_accum == 4
    with pytest.raises(ConfigError, match="grad_accum"):
        apply_overrides(TrainConfig(), ["grad_accum=3"])  # default batch_size 16


# ----------------------------------------------------------------------------------------------
# experiment files


def test_load_experiment(tmp_path):
    path = tmp_path / "small_run.py"
    path.write_text(textwrap.dedent('''
        """An experiment: mini with 2 layers."""
        import dataclasses
        from gpt2_jax import config

        def get_config():
            return config.TrainConfig(model=dataclasses.replace(config.preset("mini"), n_layer=2), steps=5)
    '''))
    cfg = C.load_experiment(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.steps == 5 and cfg.model.n_layer == 2 and cfg.model.n_embd == 128
    assert C.load_experiment(str(path)) == cfg  # str paths work too


def test_load_experiment_missing_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigError) as e:
        C.load_experiment(missing)
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)


def test_load_experiment_without_get_config(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("X = 1\n")
    with pytest.raises(ConfigError) as e:
        C.load_experiment(path)
    assert str(path) in str(e.value) and "get_config" in str(e.value)


def test_load_experiment_wrong_return_type(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text("def get_config():\n    return {'steps': 3}\n")
    with pytest.raises(ConfigError) as e:
        C.load_experiment(path)
    assert "dict" in str(e.value) and "TrainConfig" in str(e.value)


# ----------------------------------------------------------------------------------------------
# dict round trip


def test_dict_round_trip_through_json():
    cfg = apply_overrides(TrainConfig(), ["model=gpt2-medium", "model.dtype=bfloat16", "optim.lr=1e-4",
                                          "data.seq_len=512", "steps=9"])
    data = json.loads(json.dumps(C.to_dict(cfg)))
    assert data["model"]["n_layer"] == 24 and data["optim"]["lr"] == 1e-4
    back = C.from_dict(TrainConfig, data)
    assert back == cfg
    assert isinstance(back.model, ModelConfig) and isinstance(back.data, DataConfig)


def test_from_dict_unknown_key():
    data = C.to_dict(TrainConfig())
    data["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match="learning_rate"):
        C.from_dict(TrainConfig, data)


def test_from_dict_nested_unknown_key():
    data = C.to_dict(TrainConfig())
    data["model"]["n_embed"] = 64
    with pytest.raises(ConfigError, match=r"ModelConfig.*n_embed"):
        C.from_dict(TrainConfig, data)


def test_from_dict_validates():
    data = C.to_dict(TrainConfig())
    data["model"]["n_head"] = 3  # 128 % 3 != 0
    with pytest.raises(ConfigError, match="n_head=3"):
        C.from_dict(TrainConfig, data)
