"""tuneroute operator: FineTuneJob and ModelRoute controllers (kopf)."""

GROUP = "tuneroute.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
