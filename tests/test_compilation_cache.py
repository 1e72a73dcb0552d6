"""The CLI's persistent compilation cache (gpt2_jax/compilation_cache.py): where it goes, how it is
turned off, and that a program compiled once is read back instead of compiled again.

Run in a fresh interpreter: JAX decides once per process whether it uses a cache, and the test
process itself must keep it off (tests/conftest.py sets GPT2_JAX_CACHE_DIR=none).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    from jax.experimental.compilation_cache import compilation_cache as jax_cache
    from gpt2_jax import compilation_cache

    tmp, out = sys.argv[1], {}
    def fresh(**env):
        jax.config.update("jax_compilation_cache_dir", None)
        jax_cache.reset_cache()
        jax.clear_caches()
        for key in ("GPT2_JAX_CACHE_DIR", "XDG_CACHE_HOME"):
            os.environ.pop(key, None)
        os.environ.update(env)

    fresh(GPT2_JAX_CACHE_DIR="none")
    out["off"] = compilation_cache.enable()
    fresh(XDG_CACHE_HOME=tmp + "/xdg")
    out["default"] = compilation_cache.enable()
    fresh(XDG_CACHE_HOME=tmp + "/blocked")
    open(tmp + "/blocked", "w").close()  # a file where the user cache should be: not creatable
    out["fallback"] = compilation_cache.enable(tmp + "/workdir")
    fresh(GPT2_JAX_CACHE_DIR=tmp + "/env")
    jax.config.update("jax_compilation_cache_dir", tmp + "/jax_own")
    out["jax_own_wins"] = compilation_cache.enable()

    fresh(GPT2_JAX_CACHE_DIR=tmp + "/env")
    out["env"] = compilation_cache.enable(min_compile_seconds=0)
    counts = compilation_cache.track()
    f = lambda x: jnp.tanh(x @ x.T).sum()
    jax.jit(f)(jnp.ones((64, 64))).block_until_ready()  # compiled and written
    out["entries"] = sorted(os.listdir(tmp + "/env"))
    jax.clear_caches()  # forget the in-memory executable: the next call must come from disk
    jax.jit(f)(jnp.ones((64, 64))).block_until_ready()
    out["counts"] = counts
    print("RESULT " + json.dumps(out))
""")


def test_cache_directory_choice_and_a_hit_from_disk(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["off"] is None
    assert out["default"] == str(tmp_path / "xdg" / "gpt2_jax" / "xla")
    assert out["fallback"] == str(tmp_path / "workdir" / "xla_cache")
    assert out["jax_own_wins"] == str(tmp_path / "jax_own")
    assert out["env"] == str(tmp_path / "env")
    assert any(name.startswith("jit_") for name in out["entries"]), out["entries"]
    # every program of the second round (the same ones: jnp.ones and f) was read from the cache, none
    # compiled again (XLA:CPU executables persist in jax 0.10)
    assert out["counts"]["requests"] >= 2 and 2 * out["counts"]["hits"] == out["counts"]["requests"], out["counts"]
