"""tuneroute operator: FineTuneJob and ModelRoute controllers (kopf)."""

# The API group and version live with the trainer's contract: the trainer writes progress into a
# FineTuneJob's status and must not import this package (see tuneroute_trainer.contract).
from tuneroute_trainer.contract import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]
