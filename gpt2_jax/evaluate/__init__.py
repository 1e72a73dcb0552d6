"""Zero-shot evaluation: the GPT-2 paper's section 3 protocol and lm-evaluation-harness's.

A task registry (`registry`), rolling-window and continuation spans (`windows`), one batched,
sharded, jitted scorer (`scorer`), one file per task family (language modelling, LAMBADA, CBT,
Winograd, reading comprehension/QA, translation, summarization), the paper's detokenizers
(`detokenize`), train/test overlap (`contamination`) and reports (`report`). `gpt2-jax eval` is the command line
(`cli`); `runner.evaluate` the same from Python.

References:
  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 3.
  EleutherAI lm-evaluation-harness (https://github.com/EleutherAI/lm-evaluation-harness).
"""

from gpt2_jax.evaluate.errors import EvalError

__all__ = ["EvalError"]
