"""Gateway core."""
