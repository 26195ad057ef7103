"""Logic and upstream clients of the auth service."""
