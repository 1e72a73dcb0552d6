"""GPT-2 124M on OpenWebText, nanoGPT's reference recipe expressed as a gpt2_jax experiment.

Command:   gpt2-jax train experiments/gpt2_124m_openwebtext.py data.path=SHARDS_DIR
Hardware:  one 8-accelerator host (8x A100/H100) or a TPU v4-8 and up; batch 480 x 1024
           tokens ~ 0.5M tokens per step, as in GPT-2/nanoGPT.
Expected:  nanoGPT reports a validation loss of about 2.85 after 600k steps of this recipe on
           OpenWebText (karpathy/nanoGPT README, "reproducing GPT-2"); not yet run here.
"""

from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset


def get_config() -> TrainConfig:
    return TrainConfig(
        workdir="runs/gpt2_124m_owt",
        model=preset("gpt2"),
        data=DataConfig(seq_len=1024),
        optim=OptimConfig(lr=6e-4, warmup_steps=2000, min_lr_ratio=0.1, weight_decay=0.1, beta2=0.95),
        steps=600_000,
        batch_size=480,
        grad_accum=1,
        log_every=10,
        eval_every=2000,
        eval_batches=200,
        ckpt_every=2000,
        sample_prompt="",
    )
