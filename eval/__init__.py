"""Relevance evaluation (BEIR-format datasets through the real pipeline)."""
