"""The train-to-serve parity gate. verify_adapter.py runs in the vLLM image (a verify Job mounts it
from a ConfigMap), never in the operator: nothing here imports it."""
