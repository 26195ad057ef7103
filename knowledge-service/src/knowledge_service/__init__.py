"""Switchboard knowledge service.

Collections, documents, vector search and retrieval-augmented answers.
"""
