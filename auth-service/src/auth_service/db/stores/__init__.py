"""Repositories: one per aggregate, each a thin layer of queries over an ``AsyncSession``.

Stores never commit; the service that owns the unit of work does.
"""
