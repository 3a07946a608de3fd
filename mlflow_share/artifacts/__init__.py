"""Checksum-validating artifact storage, version manifests and identity."""
