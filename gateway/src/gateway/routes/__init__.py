"""Gateway routes."""
