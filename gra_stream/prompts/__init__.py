"""Prompt templates, one NAME.txt per role (read through gra_stream.resources)."""
