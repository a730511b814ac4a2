"""The bundled configs (the repository's configs/ folder, installed as gra_stream.configs)."""
