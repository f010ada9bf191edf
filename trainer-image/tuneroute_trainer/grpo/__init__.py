"""GRPO (method: grpo): trl's GRPO trainers with tuneroute's rewards, rollout engines and fused MoE-LoRA kernel.

- data.py: prompts from the dataset formats;
- rollouts.py: generation engines (transformers, vLLM server) and per-version adapter publishing;
- worker.py: the asynchronous rollout worker (bounded staleness);
- tree_attention.py: a PyTorch stand-in for the hub kernel trl's async trainer attends with;
- trainers.py: the sync (GRPOTrainer) and async (AsyncGRPOTrainer) trainers;
- metrics.py: GRPO figures for status.progress.
"""
