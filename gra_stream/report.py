"""`gra-stream report`: one self-contained HTML file (inline SVG, no network) about a run: the funnel,
score distributions per reviewer model, reviewer agreement, the adjudicator's overturn rate, acceptance
by domain and round, calls and tokens per role, and a 2-D map of seed and synthetic instructions."""
from __future__ import annotations

from html import escape
from itertools import combinations
from pathlib import Path

import numpy as np

from gra_stream import svg
from gra_stream.embeddings import DIM, HashingEmbedder
from gra_stream.errors import UserError
from gra_stream.status import collect_status, runs_count
from gra_stream.store import Store

MAP_POINTS = 1500  # per group, for the embedding map

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}.grid{display:flex;flex-wrap:wrap;gap:18px}
svg.chart{border:1px solid #ddd;background:#fff;font-size:11px}svg .title{font-weight:600;font-size:13px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
.note{color:#666;font-size:13px}"""


def _rows(con, sql):
    return con.sql(sql).fetchall()


def _agreement(con) -> tuple[list[str], list[list[float | None]]]:
    """For each pair of reviewer models: the share of samples both reviewed where they agree on
    'mean >= tau' (the diagonal is 1)."""
    reviews = _rows(con, "SELECT generation_id, model, mean FROM reviews WHERE status = 'ok'")
    by_gen: dict[str, list[tuple[str, float]]] = {}
    for gid, model, mean in reviews:
        by_gen.setdefault(gid, []).append((model, mean))
    models = sorted({m for _, m, _ in reviews})
    agree = {(a, b): [0, 0] for a in models for b in models}
    for rows in by_gen.values():
        for (ma, va), (mb, vb) in combinations(rows, 2):
            for key in ((ma, mb), (mb, ma)):
                agree[key][0] += (va >= 8.0) == (vb >= 8.0)
                agree[key][1] += 1
    matrix = [[1.0 if a == b else (agree[(a, b)][0] / agree[(a, b)][1] if agree[(a, b)][1] else None)
               for b in models] for a in models]
    return models, matrix


def _embedding_map(con) -> dict[str, list[tuple[float, float]]]:
    seeds = con.sql(f"SELECT s.instruction, e.embedding FROM seeds s LEFT JOIN seed_embeddings e ON e.id = s.id "
                    f"ORDER BY s.id LIMIT {MAP_POINTS}").fetchall()
    synth = con.sql(f"SELECT s.instruction, d.embedding FROM samples s LEFT JOIN diversity d ON d.id = s.id "
                    f"ORDER BY s.id LIMIT {MAP_POINTS}").fetchall()
    if not seeds and not synth:
        return {}

    def vectors(rows):
        if rows and all(e is not None for _, e in rows):
            return np.asarray([e for _, e in rows], dtype=np.float32)
        return HashingEmbedder().embed([t for t, _ in rows]) if rows else np.zeros((0, DIM), dtype=np.float32)

    a, b = vectors(seeds), vectors(synth)
    if a.shape[1] != b.shape[1]:  # one side came from the model, the other not: use the same embedder
        a, b = HashingEmbedder().embed([t for t, _ in seeds]), HashingEmbedder().embed([t for t, _ in synth])
    both = np.vstack([a, b])
    centred = both - both.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T if len(both) > 1 else np.zeros((len(both), 2))
    return {"seeds": [tuple(p) for p in xy[: len(a)]], "synthetic": [tuple(p) for p in xy[len(a):]]}


def build_report(store: Store) -> str:
    con = store.connect()
    status = collect_status(store)
    f = status["funnel"]
    funnel = [("seeds", f["seeds"]), ("profiled", f["profiled"]), ("generated", f["generations"]),
              ("passed gates", f["passed_gates"]), ("reviewed", f["reviewed"]), ("decided", f["verdicts"]),
              ("accepted by committee", f["accepted"]), ("adjudicated", f["adjudicated"]),
              ("kept by adjudicator", f["adjudicator_kept"]), ("diverse enough", f["diverse"]), ("samples", f["samples"])]
    rejections = status["rejections"]
    scores: dict[str, list[float]] = {}
    for model, mean in _rows(con, "SELECT model, mean FROM reviews WHERE status = 'ok'"):
        scores.setdefault(model, []).append(mean)
    stds = [s for (s,) in _rows(con, "SELECT std FROM verdicts WHERE std IS NOT NULL")]
    models, matrix = _agreement(con)
    adjudicated, overturned = _rows(con, "SELECT count(*), count(*) FILTER (WHERE status = 'ok' AND NOT keep) "
                                         "FROM adjudications")[0]
    by_domain = _rows(con, """SELECT g.domain, count(*), count(s.id) FROM generations g LEFT JOIN samples s ON s.id = g.id
                              WHERE g.status = 'ok' GROUP BY 1 ORDER BY 1""")
    by_round = _rows(con, """SELECT g.round, count(*), count(s.id) FROM generations g LEFT JOIN samples s ON s.id = g.id
                             WHERE g.status = 'ok' GROUP BY 1 ORDER BY 1""")
    roles = _rows(con, "SELECT role, count(*), sum(prompt_tokens + completion_tokens) FROM calls GROUP BY 1 ORDER BY 1")
    cost_by = {"role": {}, "model": {}}
    for c in status["calls"]:
        for key in cost_by:
            cost_by[key][c[key]] = cost_by[key].get(c[key], 0.0) + c["cost"]
    charts = {
        "Funnel": [svg.bars("rows per stage", [k for k, _ in funnel], [v for _, v in funnel]),
                   svg.bars("rejections by stage and reason", [f"{r['stage']}: {r['reason']}" for r in rejections],
                            [r["rows"] for r in rejections])],
        "Reviewers": [svg.histograms("reviewer mean score, per model", scores, lo=0, hi=10),
                      svg.histograms("committee standard deviation (population)", {"std": stds}, lo=0, hi=5),
                      svg.heatmap("agreement on 'mean >= 8' between reviewer models", models, matrix)],
        "Adjudication": [svg.bars("adjudicated samples", ["kept", "overturned (rejected)"],
                                  [adjudicated - overturned, overturned])],
        "Acceptance": [svg.bars("acceptance by domain (kept / generated)", [d or "?" for d, _, _ in by_domain],
                                [k / n if n else 0 for _, n, k in by_domain], fmt="{:.0%}"),
                       svg.bars("acceptance by round (kept / generated)", [f"round {r}" for r, _, _ in by_round],
                                [k / n if n else 0 for _, n, k in by_round], fmt="{:.0%}")],
        "Cost": [svg.bars("LLM calls per role", [r for r, _, _ in roles], [n for _, n, _ in roles]),
                 svg.bars("tokens per role", [r for r, _, _ in roles], [t or 0 for _, _, t in roles]),
                 *([svg.bars(f"cost per {key}", list(costs), list(costs.values()), fmt="{:.4f}")
                    for key, costs in cost_by.items()] if status["cost"]["priced"] else [])],
        "Diversity": [svg.scatter("seed vs synthetic instructions (PCA of their embeddings)", _embedding_map(con))],
    }
    rate = f"{overturned / adjudicated:.0%}" if adjudicated else "n/a"
    body = [f"<h1>gra-stream run {escape(str(store.root))}</h1>",
            f"<p class='note'>{f['samples']} samples kept from {f['seeds']} seeds; {f['reviews']} review calls "
            f"({f['review_calls_saved']} saved by the short-circuit); adjudicator overturn rate {rate}; "
            f"{runs_count(status['runs']['invocations'])}, {status['runs']['elapsed_s']:.0f} s"
            + (f"; cost {status['cost']['total']:.4f} in all, {status['cost']['per_sample']:.4f} per kept sample"
               if status["cost"]["priced"] and status["cost"]["per_sample"] is not None else "") + ".</p>"]
    for section, items in charts.items():
        body.append(f"<h2>{section}</h2><div class='grid'>{''.join(items)}</div>")
    script = ("<script>const n=[...document.querySelectorAll('svg.chart')].filter(s=>s.querySelector("
              "'rect.bar,rect.cell,circle.dot')&&s.getBoundingClientRect().width>0).length;"
              "document.title='charts drawn: '+n;</script>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>gra-stream report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}{script}</body></html>")


def write_report(store: Store, out: Path) -> None:
    try:
        out.write_text(build_report(store), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
