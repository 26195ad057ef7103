"""Switchboard auth service: users, sessions, tokens, API keys and signing keys."""
