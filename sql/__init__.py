"""The bundled SQL: quality filters and views (the repository's sql/ folder, installed as gra_stream.sql)."""
