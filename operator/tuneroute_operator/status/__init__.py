"""Pure functions that turn children's observed state into a custom resource's status."""
