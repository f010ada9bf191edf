"""tuneroute's trainer: LoRA fine-tuning of (MoE) causal LMs; `python -m tuneroute_trainer --config FILE`."""

from .config import TrainerConfig, load_config

__all__ = ["TrainerConfig", "load_config"]
