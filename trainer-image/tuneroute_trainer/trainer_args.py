"""The transformers TrainingArguments every method shares (sft, dpo, grpo): one place for the
schedule, precision, checkpoint cadence and the quiet logging the progress reporter relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainerConfig


def shared_trainer_args(cfg: TrainerConfig, ckpt_dir: Path, per_device_batch: int, max_steps: int) -> dict[str, Any]:
    import torch

    t = cfg.training
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        max_steps=max_steps,
        seed=t.seed,
        data_seed=t.seed,
        bf16=cuda and t.precision == "bf16",  # the CPU trains in fp32
        fp16=cuda and t.precision == "fp16",
        use_cpu=not cuda,
        logging_steps=1,  # every step reaches the progress callback
        save_strategy="steps",
        save_steps=cfg.checkpoint.every_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
