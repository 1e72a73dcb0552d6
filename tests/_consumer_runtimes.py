"""Consumer runtimes (llama.cpp, ONNX Runtime, TensorFlow) run in a child process, so a crash is one failed test.

A runtime that segfaults or aborts inside its native code takes the whole process with it; run
in pytest's own process, one such crash kills the suite (as llama.cpp's q8_0 decode did on an
Intel CPU with AMX, issue 23). `run_consumer(runtime, job, **args)` runs one job of this module
in a fresh `python tests/_consumer_runtimes.py` (which imports numpy and that runtime only, not
jax), and returns its result: JSON values, plus numpy arrays passed through an .npz file. A child
killed by a signal raises `ConsumerCrash` (an AssertionError, so the test fails) naming the
runtime, the job and the signal; a Python error or a timeout in the child fails the test with the
child's traceback. Each job batches the checks of one loaded model, so a test pays one child
start (tens of milliseconds plus the runtime's import) per model, not per check.

`llama_logits_with_fallback` is the q8_0 policy: run llama.cpp's default path; if it dies of a
signal, probe llama.cpp's own file of the same type (made by `llama_model_quantize`) the same
way; if that dies too, the crash is llama.cpp's on this CPU, and the check runs again with
`use_extra_bufts=False` (no CPU weight-repacking buffers, where the AMX kernels live), reporting
that it did. `GPT2_JAX_TEST_LLAMA_CRASH=default` makes the default path crash on purpose (a
SIGSEGV sent to itself just before decoding) to test that policy on any CPU (`default:NAME`: only
for the file named NAME).

References:
  Python `subprocess` (negative return code = killed by that signal); llama.cpp `llama_model_params`
  (`use_extra_bufts`) and `llama_model_quantize` via llama-cpp-python's ctypes bindings; issue 23.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import traceback

RUNTIMES = {"llama.cpp", "onnxruntime", "tensorflow", "python"}
FORCE_CRASH_ENV = "GPT2_JAX_TEST_LLAMA_CRASH"
RESULT_MARK = "CONSUMER-RESULT "


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class ConsumerCrash(AssertionError):
    """The child running a consumer runtime was killed by a signal."""

    def __init__(self, runtime: str, job: str, signum: int, stderr: str):
        self.runtime, self.job, self.signum = runtime, job, signum
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        super().__init__(f"{runtime} crashed with {signal_name(signum)} ({signum}) in job {job!r}; stderr tail:\n{tail}")


# ---------------------------------------------------------------------------------------------- parent side
def run_consumer(runtime: str, job: str, *, timeout: float = 300, **args) -> dict:
    """Run JOBS[job](**args) in a child process and return its result (arrays come back as numpy)."""
    import numpy as np

    assert runtime in RUNTIMES and job in JOBS, (runtime, job)
    with tempfile.TemporaryDirectory(prefix="consumer-") as tmp:
        spec = dict(job=job, args=args, arrays=str(pathlib.Path(tmp) / "arrays.npz"))
        try:
            proc = subprocess.run([sys.executable, __file__], input=json.dumps(spec), text=True, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{runtime} job {job!r} did not finish in {timeout:.0f} s") from None
        if proc.returncode < 0:
            raise ConsumerCrash(runtime, job, -proc.returncode, proc.stderr)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
        if proc.returncode != 0 or not lines:
            raise AssertionError(f"{runtime} job {job!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        result = json.loads(lines[-1][len(RESULT_MARK):])
        if os.path.exists(spec["arrays"]):
            with np.load(spec["arrays"]) as arrays:
                result.update({k: arrays[k] for k in arrays.files})
    return result


def llama_logits_with_fallback(path, probe_path, prompts: list[list[int]], *, report=print, **kwargs) -> dict:
    """Logits of each prompt from llama.cpp for the GGUF file `path`: the default path where it runs,
    else (only when llama.cpp's own file `probe_path` of the same type crashes it too) with extra
    buffer types off. The result's "extra_bufts" says which path ran."""
    try:
        return run_consumer("llama.cpp", "llama_check", path=str(path), prompts=prompts, **kwargs)
    except ConsumerCrash as crash:
        ours = crash
    try:
        run_consumer("llama.cpp", "llama_check", path=str(probe_path), prompts=prompts[:1], **kwargs)
    except ConsumerCrash as probe:
        report(f"llama.cpp's default path crashes on this CPU with its own {pathlib.Path(probe_path).name} "
               f"({signal_name(probe.signum)}) as with ours ({signal_name(ours.signum)}): "
               f"checking with use_extra_bufts=False (no CPU repacking buffers)")
        return run_consumer("llama.cpp", "llama_check", path=str(path), prompts=prompts,
                            **{**kwargs, "extra_bufts": False})
    raise AssertionError(f"llama.cpp crashes on our file but not on its own {probe_path}: {ours}")


# ---------------------------------------------------------------------------------------------- child side
def job_crash(how: str) -> dict:
    """Dies on purpose: tests that the harness reports a crash instead of dying with it."""
    if how == "abort":
        os.abort()
    os.kill(os.getpid(), getattr(signal, how))
    return {}


def job_llama_check(path: str, prompts: list[list[int]], n_ctx: int = 64, extra_bufts: bool = True,
                    texts: tuple[str, ...] = (), generate: int = 0) -> dict:
    """One GGUF file in llama.cpp: vocabulary size, metadata, tokenization of `texts`, the logits of
    each prompt, and `generate` greedy tokens after the first prompt (llama.cpp's own sampler)."""
    import llama_cpp  # a test extra: a missing install fails the test (child exit 1), never skips it
    import llama_cpp.llama as high_level
    import numpy as np

    forced = os.environ.get(FORCE_CRASH_ENV, "")  # "default" (every file) or "default:NAME" (files named NAME)
    crash_default = extra_bufts and (forced == "default" or forced == f"default:{pathlib.Path(path).name}")
    if not extra_bufts:
        # `Llama(...)` has no argument for it (unknown keywords are silently ignored): it takes
        # llama.cpp's default model parameters, so those are what gets the flag.
        defaults = high_level.llama_cpp.llama_model_default_params

        def without_extra_bufts():
            params = defaults()
            params.use_extra_bufts = False
            return params

        high_level.llama_cpp.llama_model_default_params = without_extra_bufts
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, n_threads=2,
                          verbose=False)
    assert llm.model_params.use_extra_bufts == extra_bufts
    out = dict(n_vocab=llm.n_vocab(), metadata=dict(llm.metadata), extra_bufts=extra_bufts,
               tokens=[llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts])
    arrays = {}
    for i, prompt in enumerate(prompts):
        if crash_default:
            os.kill(os.getpid(), signal.SIGSEGV)  # where the real crash happens: in decode, after loading
        llm.reset()
        llm.eval(prompt)
        arrays[f"logits{i}"] = np.array(llm.scores[: len(prompt)], np.float32)
    if generate:
        llm.reset()
        cont = []
        for token in llm.generate(prompts[0], top_k=1, temp=0.0):
            cont.append(int(token))
            if len(cont) == generate:
                break
        out["generated"] = cont
    return {**out, "__arrays__": arrays}


def job_llama_quantize(src: str, out: str, ftype: str = "MOSTLY_Q8_0") -> dict:
    """llama.cpp's own quantizer (`llama_model_quantize`) applied to a GGUF file."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{ftype}")
    params.nthread = 2
    status = llama_cpp.llama_model_quantize(src.encode(), out.encode(), params)
    return {"status": int(status)}


def job_onnx_logits(path: str, batches: list[list[list[int]]]) -> dict:
    """ONNX Runtime (CPU provider): the graph's inputs/outputs and the logits of each token batch."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    [inp], [out] = session.get_inputs(), session.get_outputs()
    arrays = {f"logits{i}": session.run(None, {inp.name: np.array(b, np.int64)})[0] for i, b in enumerate(batches)}
    return {"io": [inp.name, inp.shape, out.name, out.shape], "__arrays__": arrays}


def job_savedmodel_logits(path: str, batches: list[list[list[int]]]) -> dict:
    """TensorFlow: load a SavedModel and run its serving signature on each token batch."""
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    arrays = {f"logits{i}": np.asarray(serve(tokens=tf.constant(b, tf.int32))["logits"]) for i, b in enumerate(batches)}
    return {"outputs": list(serve.structured_outputs), "__arrays__": arrays}


JOBS = {"crash": job_crash, "llama_check": job_llama_check, "llama_quantize": job_llama_quantize,
        "onnx_logits": job_onnx_logits, "savedmodel_logits": job_savedmodel_logits}


def _child() -> None:
    import numpy as np

    spec = json.loads(sys.stdin.read())
    try:
        result = JOBS[spec["job"]](**spec["args"])
    except Exception:  # noqa: BLE001 -- reported to the parent as a failure with this traceback
        traceback.print_exc()
        raise SystemExit(1)
    arrays = result.pop("__arrays__", {})
    if arrays:
        np.savez(spec["arrays"], **arrays)
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child()
