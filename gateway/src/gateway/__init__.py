"""Switchboard gateway: the one public URL in front of every service."""
