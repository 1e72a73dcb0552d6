"""gpt2_jax: GPT-2 in JAX/Flax, faithful to the paper, checked against Hugging Face."""

__version__ = "0.1.0"
