"""The composition root: settings, and the builders that turn them into a running service."""
