"""The evaluation and training lab: data sets, edits, `eval`, `train`, fitting, local dev servers.

Never imported by the service (enforced by the import contract in pyproject.toml); its extra
dependencies come with the ``lab`` extra.
"""
