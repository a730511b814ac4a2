"""The funnel of a run, read from its tables alone (no lock, no writer needed)."""
from __future__ import annotations

import json

from gra_stream.store import Store

FUNNEL_SQL = {
    "seeds": "SELECT count(*) FROM seeds",
    "seeds_without_response": "SELECT count(*) FROM seeds WHERE response = ''",
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


def prices(con) -> dict[str, tuple[float, float]]:
    """Per model, the cost of a million prompt and completion tokens, from the config of the latest run."""
    rows = con.sql("SELECT config FROM runs ORDER BY started DESC, id LIMIT 1").fetchall()
    models = json.loads(rows[0][0]).get("models", []) if rows and rows[0][0] else []
    return {m["name"]: (m.get("price_input", 0.0), m.get("price_output", 0.0)) for m in models}


def collect_status(store: Store) -> dict:
    con = store.connect()
    one = lambda sql: con.sql(sql).fetchall()[0][0]  # noqa: E731
    funnel = {name: one(sql) for name, sql in FUNNEL_SQL.items()}
    rejections = [dict(stage=s, reason=r, rows=n) for s, r, n in con.execute(
        "SELECT stage, reason, count(*) FROM rejections GROUP BY ALL ORDER BY 3 DESC, 1, 2").fetchall()]
    price = prices(con)
    calls = [dict(role=r, model=m, calls=n, quarantined=q, attempts=a, truncated=t, retries=rt, wait_s=round(w, 1),
                  prompt_tokens=pt, completion_tokens=ct, tokens_per_s=round(ct / s, 1) if s else None,
                  cost=(pt * price.get(m, (0, 0))[0] + ct * price.get(m, (0, 0))[1]) / 1e6)
             for r, m, n, q, a, t, rt, w, pt, ct, s in con.execute("""
                SELECT role, model, count(*), count(*) FILTER (WHERE status <> 'ok'), sum(attempts),
                       count(*) FILTER (WHERE truncated), sum(retries), coalesce(sum(wait_s), 0), sum(prompt_tokens),
                       sum(completion_tokens), sum(latency_s)
                FROM calls GROUP BY ALL ORDER BY 1, 2""").fetchall()]
    total = sum(c["cost"] for c in calls)
    runs = con.sql("SELECT count(*), coalesce(sum(elapsed_s), 0), arg_max(outcome, started) FROM runs").fetchall()[0]
    made_under = con.sql("SELECT id, started, config FROM runs WHERE coalesce(versions, '') <> '' "
                         "ORDER BY started DESC, id LIMIT 1").fetchall()
    current = json.loads(made_under[0][2]) if made_under else {}
    kept_versions = [{"label": k.label, "kept_at": k.kept_at,  # a config {}: tables no run recorded (run_log)
                      "differs": config_differences(k.config, current) if k.config else ["made under a config no run recorded"],
                      "tables": {t: con.sql(f"SELECT count(*) FROM {k.label}.{t}").fetchall()[0][0] for t in k.tables()}}
                     for k in store.kept()]
    return {"run_dir": str(store.root), "funnel": funnel, "rejections": rejections, "calls": calls,
            "cost": {"total": total, "per_sample": total / funnel["samples"] if funnel["samples"] else None,
                     "priced": any(p != (0, 0) for p in price.values())},
            "runs": {"invocations": runs[0], "elapsed_s": round(runs[1], 2), "last_outcome": runs[2]},
            "tables_config": {"run": made_under[0][0], "started": made_under[0][1]} if made_under else None,
            "kept_versions": kept_versions}


def _leaves(data, prefix: str = "") -> dict:
    """A config as {dotted key: value}; the items of a list of named tables ([[models]]) under their names."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    if _named(data):
        return {k: v for item in data for k, v in _leaves(item, f"{prefix}{item['name']}.").items()}
    return {prefix.rstrip("."): data}


def _named(data) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(v, dict) and "name" in v for v in data)


def _named_lists(data, prefix: str = "") -> dict[str, list[str]]:
    """{dotted key: the names in order} of every list of named tables in a config."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _named_lists(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): [item["name"] for item in data]} if _named(data) else {}


def config_differences(kept_config: dict, current: dict) -> list[str]:
    """Where a kept version's config differs from the current tables' config ("committee.tau 6.0, now 8.0",
    "models.qwen.temperature 0.7, now 0.9", "models.mistral absent, now present"); a key one of them does
    not set is "unset" there (its default applies)."""
    a, b = _leaves(kept_config), _leaves(current)
    lists_a, lists_b = _named_lists(kept_config), _named_lists(current)
    out, alone = [], []
    for key in sorted(set(lists_a) | set(lists_b)):
        names_a, names_b = lists_a.get(key, []), lists_b.get(key, [])
        out += [f"{key}.{n} present, now absent" for n in names_a if n not in names_b]
        out += [f"{key}.{n} absent, now present" for n in names_b if n not in names_a]
        alone += [f"{key}.{n}." for n in set(names_a) ^ set(names_b)]
        if [n for n in names_a if n in names_b] != [n for n in names_b if n in names_a]:
            out.append(f"{key} order {names_a}, now {names_b}")

    def value(leaves: dict, k: str) -> str:
        return repr(leaves[k]) if k in leaves else "unset"

    return out + [f"{k} {value(a, k)}, now {value(b, k)}" for k in sorted(set(a) | set(b))
                  if a.get(k) != b.get(k) and k != "source" and not k.startswith(tuple(alone))]


def runs_count(invocations: int) -> str:
    """How many times `gra-stream run` ran on the directory: "1 run", "3 runs"."""
    return f"{invocations} run" + ("" if invocations == 1 else "s")


def format_status(status: dict) -> str:
    f = status["funnel"]
    lines = [f"run {status['run_dir']}  ({runs_count(status['runs']['invocations'])}, last {status['runs']['last_outcome']},"
             f" {status['runs']['elapsed_s']:.1f} s in all)", "", "funnel"]
    for label, key in [("seeds", "seeds"), ("  without a response", "seeds_without_response"),
                       ("bad seed rows", "ingest_errors"), ("profiled", "profiled"),
                       ("generated", "generations"), ("passed gates", "passed_gates"), ("reviewed", "reviewed"),
                       ("review calls", "reviews"),
                       ("review calls saved", "review_calls_saved"), ("decided", "verdicts"), ("accepted by committee", "accepted"),
                       ("adjudicated", "adjudicated"), ("kept by adjudicator", "adjudicator_kept"),
                       ("diverse enough", "diverse"), ("annotated", "annotated"),
                       ("samples (kept)", "samples"), ("quarantined", "quarantined")]:
        lines.append(f"  {label:<24}{f[key]:>10}")
    lines += ["", "rejections by stage and reason"]
    lines += [f"  {r['stage']:<12}{r['reason']:<28}{r['rows']:>8}" for r in status["rejections"]] or ["  (none)"]
    cost = status["cost"]
    lines += ["", "LLM calls per role and model",
              f"  {'role':<12}{'model':<16}{'calls':>7}{'re-ask':>7}{'quar.':>7}{'trunc.':>7}{'retry':>7}{'wait s':>8}"
              f"{'tok in':>10}{'tok out':>10}{'tok/s':>9}" + (f"{'cost':>10}" if cost["priced"] else "")]
    lines += [f"  {c['role']:<12}{c['model']:<16}{c['calls']:>7}{c['attempts'] - c['calls']:>7}{c['quarantined']:>7}"
              f"{c['truncated']:>7}{c['retries']:>7}{c['wait_s']:>8.1f}"
              f"{c['prompt_tokens']:>10}{c['completion_tokens']:>10}{c['tokens_per_s'] or 0:>9}"
              + (f"{c['cost']:>10.4f}" if cost["priced"] else "") for c in status["calls"]] or ["  (none)"]
    if cost["priced"]:
        per_sample = f"{cost['per_sample']:.4f}" if cost["per_sample"] is not None else "n/a (no sample kept)"
        lines += ["", f"cost (at the prices of the latest run's config): {cost['total']:.4f} in all, "
                      f"{per_sample} per kept sample"]
    if status["tables_config"]:
        lines += ["", f"tables made under the config of run {status['tables_config']['run']} "
                      f"(started {status['tables_config']['started']}; gra-stream sql DIR \"SELECT config FROM runs\")"]
    for k in status["kept_versions"]:
        tables = ", ".join(f"{t} {n}" for t, n in k["tables"].items())
        example = "samples" if "samples" in k["tables"] else max(k["tables"], default="")  # a table it holds
        lines += [f"kept {k['label']} ({k['kept_at']}): {'; '.join(k['differs']) or 'same config'}",
                  f"  {tables}  (query as {k['label']}.{example}; gra-stream prune DIR removes it)"]
    return "\n".join(lines)
