"""The default diversity model, all-MiniLM-L6-v2, in whole runs (the other pipeline tests use the hashing
embedder, which needs no model)."""
from gra_stream.embeddings import MINILM
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from tests.conftest import corpus, fake_config, frame, head_jsonl


def test_minilm_runs_are_the_same_on_every_executor_and_batch_size(tmp_path):
    """The runner embedding on its torch threads (the local executor, the seeds in one batch) and two worker
    processes on one thread each (the seeds in batches of 16) make the same vectors and the same diversity
    decisions, bit for bit: executors and batch sizes are performance knobs (docs/config.md)."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 80)
    runs = {"local": {}, "processes": {"cpu_batch_size": 16, "processes": {"workers": 2}}}
    for executor, knobs in runs.items():
        config = fake_config(diversity={"model": MINILM}, **knobs)
        run_pipeline([seeds], tmp_path / executor, config, progress=Progress(quiet=True), executor=executor)
    queries = {"seed_embeddings": "SELECT id, embedding FROM seed_embeddings ORDER BY id",
               "diversity": "SELECT id, kept, duplicate_of, similarity, embedding FROM diversity ORDER BY id",
               "samples": "SELECT * FROM samples ORDER BY id"}
    for name, query in queries.items():
        local, processes = frame(tmp_path / "local", query), frame(tmp_path / "processes", query)
        assert local.height > 0 and local.equals(processes), name
    assert frame(tmp_path / "local", "SELECT count(*) AS n FROM seed_embeddings")["n"][0] == 80


def test_a_tau_change_reads_back_the_embeddings_it_has_on_every_executor(tmp_path, monkeypatch):
    """A new tau walks the diversity filter again, embedding with MiniLM only the candidates the table
    kept aside lacks and reading the others back (gra_stream/carry.py, `reusable`); in worker processes
    too, and every table comes out as a fresh run's."""
    from gra_stream.embeddings import MiniLMEmbedder

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 80)
    before, after = (fake_config(diversity={"model": MINILM}, committee={"tau": tau}) for tau in (8.0, 6.0))
    embedded = []
    for executor in ("local", "processes"):
        run_pipeline([seeds], tmp_path / executor, before, progress=Progress(quiet=True), executor=executor)
        with monkeypatch.context() as patch:
            real_embed = MiniLMEmbedder.embed
            patch.setattr(MiniLMEmbedder, "embed",
                          lambda self, texts: embedded.extend(texts) or real_embed(self, texts))
            run_pipeline([seeds], tmp_path / executor, after, progress=Progress(quiet=True), executor=executor)
        if executor == "local":
            candidates = dict(frame(tmp_path / "local", "SELECT d.id, g.instruction FROM diversity d "
                                                        "JOIN generations g USING (id)").iter_rows())
            had = set(frame(tmp_path / "local", "SELECT id FROM v1.diversity")["id"])
            assert candidates.keys() & had and candidates.keys() - had
            assert sorted(embedded) == sorted(t for i, t in candidates.items() if i not in had)
    run_pipeline([seeds], tmp_path / "fresh", after, progress=Progress(quiet=True))
    for query in ("SELECT id, kept, duplicate_of, similarity, embedding FROM diversity ORDER BY id",
                  "SELECT * FROM samples ORDER BY id"):
        fresh = frame(tmp_path / "fresh", query)
        assert fresh.height and all(frame(tmp_path / e, query).equals(fresh) for e in ("local", "processes")), query
