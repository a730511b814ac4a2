"""The funnel of a run, read from its tables alone (no lock, no writer needed)."""
from __future__ import annotations

from gra_stream.store import Store

FUNNEL_SQL = {
    "seeds": "SELECT count(*) FROM seeds",
    "ingest_errors": "SELECT count(*) FROM ingest_errors",
    "profiled": "SELECT count(*) FROM profiles WHERE status = 'ok'",
    "generations": "SELECT count(*) FROM generations WHERE status = 'ok'",
    "passed_gates": "SELECT count(*) FROM gates WHERE passed",
    "reviews": "SELECT count(*) FROM reviews WHERE status <> 'skipped'",
    "review_calls_saved": "SELECT count(*) FROM reviews WHERE status = 'skipped'",
    "reviewed": "SELECT count(DISTINCT generation_id) FROM reviews",
    "verdicts": "SELECT count(*) FROM verdicts",
    "accepted": "SELECT count(*) FROM verdicts WHERE decision = 'accept'",
    "adjudicated": "SELECT count(*) FROM adjudications",
    "adjudicator_kept": "SELECT count(*) FROM adjudications WHERE keep",
    "diverse": "SELECT count(*) FROM diversity WHERE kept",
    "annotated": "SELECT count(*) FROM annotations WHERE status = 'ok'",
    "samples": "SELECT count(*) FROM samples",
    "quarantined": "SELECT count(*) FROM quarantine",
}


def collect_status(store: Store) -> dict:
    con = store.connect()
    one = lambda sql: con.sql(sql).fetchall()[0][0]  # noqa: E731
    funnel = {name: one(sql) for name, sql in FUNNEL_SQL.items()}
    rejections = [dict(stage=s, reason=r, rows=n) for s, r, n in con.execute(
        "SELECT stage, reason, count(*) FROM rejections GROUP BY ALL ORDER BY 3 DESC, 1, 2").fetchall()]
    calls = [dict(role=r, model=m, calls=n, quarantined=q, attempts=a, truncated=t, retries=rt, prompt_tokens=pt,
                  completion_tokens=ct, tokens_per_s=round(ct / s, 1) if s else None)
             for r, m, n, q, a, t, rt, pt, ct, s in con.execute("""
                SELECT role, model, count(*), count(*) FILTER (WHERE status <> 'ok'), sum(attempts),
                       count(*) FILTER (WHERE truncated), sum(retries), sum(prompt_tokens), sum(completion_tokens),
                       sum(latency_s)
                FROM calls GROUP BY ALL ORDER BY 1, 2""").fetchall()]
    runs = con.sql("SELECT count(*), coalesce(sum(elapsed_s), 0), arg_max(outcome, started) FROM runs").fetchall()[0]
    return {"run_dir": str(store.root), "funnel": funnel, "rejections": rejections, "calls": calls,
            "runs": {"invocations": runs[0], "elapsed_s": round(runs[1], 2), "last_outcome": runs[2]}}


def format_status(status: dict) -> str:
    f = status["funnel"]
    lines = [f"run {status['run_dir']}  ({status['runs']['invocations']} invocations, last {status['runs']['last_outcome']},"
             f" {status['runs']['elapsed_s']:.1f} s in all)", "", "funnel"]
    for label, key in [("seeds", "seeds"), ("bad seed rows", "ingest_errors"), ("profiled", "profiled"),
                       ("generated", "generations"), ("passed gates", "passed_gates"), ("reviewed", "reviewed"),
                       ("review calls", "reviews"),
                       ("review calls saved", "review_calls_saved"), ("decided", "verdicts"), ("accepted by committee", "accepted"),
                       ("adjudicated", "adjudicated"), ("kept by adjudicator", "adjudicator_kept"),
                       ("diverse enough", "diverse"), ("annotated", "annotated"),
                       ("samples (kept)", "samples"), ("quarantined", "quarantined")]:
        lines.append(f"  {label:<24}{f[key]:>10}")
    lines += ["", "rejections by stage and reason"]
    lines += [f"  {r['stage']:<12}{r['reason']:<28}{r['rows']:>8}" for r in status["rejections"]] or ["  (none)"]
    lines += ["", "LLM calls per role and model",
              f"  {'role':<12}{'model':<16}{'calls':>7}{'re-ask':>7}{'quar.':>7}{'trunc.':>7}{'retry':>7}"
              f"{'tok in':>10}{'tok out':>10}{'tok/s':>9}"]
    lines += [f"  {c['role']:<12}{c['model']:<16}{c['calls']:>7}{c['attempts'] - c['calls']:>7}{c['quarantined']:>7}"
              f"{c['truncated']:>7}{c['retries']:>7}"
              f"{c['prompt_tokens']:>10}{c['completion_tokens']:>10}{c['tokens_per_s'] or 0:>9}" for c in status["calls"]] \
        or ["  (none)"]
    return "\n".join(lines)
