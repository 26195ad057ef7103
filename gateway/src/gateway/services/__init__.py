"""Gateway services."""
