"""Switchboard memory service: short-term conversation memory and long-term facts."""
