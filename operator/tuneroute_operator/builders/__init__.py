"""Pure functions that turn a custom resource into the manifests of its children."""
