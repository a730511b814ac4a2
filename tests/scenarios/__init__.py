"""End-to-end scenarios: the whole pipeline, the command line, real processes, servers and models, as a
user runs them. Tests of one module at a time are in tests/ (test_<module>.py)."""
