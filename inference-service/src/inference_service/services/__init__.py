"""Logic and upstream clients of the inference service."""
