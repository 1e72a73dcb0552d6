"""`python -m gpt2_jax ...` is the same as `gpt2-jax ...`."""

from gpt2_jax.cli import main

raise SystemExit(main())
