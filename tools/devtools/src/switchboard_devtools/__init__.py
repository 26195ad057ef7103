"""Dev tooling: start real processes (Redis, the services, the gateway) and stop them.

Used by ``make up`` / ``make down`` and by the test fixtures, so tests exercise the same
launch path a developer uses. Standard library only.
"""
