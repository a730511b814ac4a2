"""Reviewer calibration: before spending GPU hours, measure how well the review committee separates
good samples from deliberately corrupted ones.

`make_labelled_set` builds such a set from seed files: each seed gives a good sample (label 1) and one
corruption (label 0), in turn: its final number changed, the response of another seed, or its response
cut short. `calibrate` runs every reviewer on every sample (no short-circuit) and reports, per model
and for the committee, accuracy and the ROC AUC of the mean score, and how tau and delta would change
the outcome (recomputed from the same reviews, no extra calls).
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import polars as pl

from gra_stream.backends.pool import ModelPool
from gra_stream.committee import committee_rule, deal_roles
from gra_stream.config import Config, Fields
from gra_stream.errors import UserError
from gra_stream.fields import extract, resolve_mapping
from gra_stream.ids import content_id
from gra_stream.readers import iter_rows
from gra_stream.schemas import CHECKS
from gra_stream.stages import Context
from gra_stream.stages import review

CORRUPTIONS = ("wrong_number", "mismatched", "truncated")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
TAUS = (6.0, 7.0, 7.5, 8.0, 8.5, 9.0)
DELTAS = (1.0, 1.5, 2.0)


def _change_last_number(text: str, rng: random.Random) -> str | None:
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    value = float(m.group()) if "." in m.group() else int(m.group())
    changed = value + rng.choice([1, 2, 3, 7, 10]) * rng.choice([1, -1])
    if changed == value or changed < 0:
        changed = value + 11
    return text[: m.start()] + str(changed) + text[m.end():]


def make_labelled_set(paths: list[Path], out: Path, *, size: int, seed: int = 0) -> dict:
    """Write `size` labelled samples (half good, half corrupted) to `out` as JSONL; returns counts."""
    pairs: list[tuple[str, str]] = []
    for path in paths:
        mapping = None
        for row in iter_rows(path):
            if row.record is None:
                continue
            mapping = mapping or resolve_mapping(row.record, Fields(), path)
            texts, _ = extract(row.record, mapping)
            if texts and texts[2]:  # a labelled sample needs a response to corrupt
                pairs.append((texts[0] + (f"\n\n{texts[1]}" if texts[1] else ""), texts[2]))
    if len(pairs) < 2:
        raise UserError("a labelled set needs at least 2 usable seeds")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    rows, kinds = [], {"good": 0, **{c: 0 for c in CORRUPTIONS}}
    for i in range(size // 2):
        instruction, response = pairs[i % len(pairs)]
        rows.append({"instruction": instruction, "response": response, "label": 1, "corruption": "none"})
        kinds["good"] += 1
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        bad = None
        if kind == "wrong_number":
            bad = _change_last_number(response, rng)
        if kind == "mismatched" or (kind == "wrong_number" and bad is None):
            kind, bad = "mismatched", pairs[(i + 1 + rng.randrange(len(pairs) - 1)) % len(pairs)][1]
        if kind == "truncated":
            bad = response[: max(1, int(len(response) * 0.4))]
        rows.append({"instruction": instruction, "response": bad, "label": 0, "corruption": kind})
        kinds[kind] += 1
    with open(out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": content_id(r["instruction"], r["response"], r["label"]), **r},
                               ensure_ascii=False) + "\n")
    return kinds


def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None with one class only."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, label in zip(ranks, labels) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _load(path: Path) -> pl.DataFrame:
    rows = []
    for row in iter_rows(path):
        r = row.record or {}
        if not isinstance(r.get("label"), int) or not r.get("instruction") or r.get("response") is None:
            raise UserError(f"{path}:{row.line}: a labelled sample needs instruction, response and label (0 or 1)")
        rows.append({"id": r.get("id") or content_id(r["instruction"], r["response"], r["label"]),
                     "instruction": r["instruction"], "response": r["response"], "label": r["label"],
                     "corruption": r.get("corruption", "")})
    if not rows:
        raise UserError(f"{path}: no labelled samples")
    return pl.DataFrame(rows)


def calibrate(path: Path, config: Config, *, pool: ModelPool | None = None) -> dict:
    config = dataclasses.replace(config, committee=dataclasses.replace(config.committee, short_circuit=False))
    samples = _load(path)
    pool = pool or ModelPool(config)
    reviewers = [deal_roles(pool.names(), config.committee.reviewers, run_seed=config.run_seed,
                            task_id=f"calibrate:{i}")[1] for i in samples["id"]]
    batch = samples.with_columns(pl.Series("reviewers", reviewers))
    ctx = Context(config, pool, None)
    reviews = pl.concat([review.run(batch.slice(s, config.llm_batch_size), ctx)
                         for s in range(0, batch.height, config.llm_batch_size)])
    label = dict(zip(samples["id"], samples["label"]))
    ok = reviews.filter(pl.col("status") == "ok")
    passes = ok.select(pl.all_horizontal(*CHECKS).alias("checks_pass"))["checks_pass"]
    ok = ok.with_columns(passes, pl.col("generation_id").replace_strict(label).alias("label"))
    tau = config.committee.tau
    per_model = []
    for model in sorted(set(ok["model"])):
        m = ok.filter(pl.col("model") == model)
        predicted = (m["mean"] >= tau) & m["checks_pass"]
        per_model.append({"model": model, "reviews": m.height,
                          "accuracy": round(float((predicted == (m["label"] == 1)).mean()), 3),
                          "auc": _round(roc_auc(m["mean"].to_list(), m["label"].to_list()))})
    committee = []
    for gid, group in ok.group_by("generation_id"):
        means = [Fraction(x).limit_denominator(6) for x in group["mean"]]
        committee.append({"id": gid[0], "label": label[gid[0]], "means": means,
                          "checks_pass": bool(group["checks_pass"].all())})
    grid = []
    for t in TAUS:
        for d in DELTAS:
            outcomes = [_decide(c, t, d) for c in committee]
            grid.append({"tau": t, "delta": d, **{k: outcomes.count(k) for k in ("accept", "adjudicate", "reject")},
                         "accuracy": _accuracy(outcomes, [c["label"] for c in committee])})
    current = [_decide(c, tau, config.committee.delta) for c in committee]
    return {
        "samples": samples.height, "good": int(samples["label"].sum()), "reviews": reviews.height,
        "quarantined": reviews.filter(pl.col("status") != "ok").height,
        "per_model": per_model,
        "committee": {"tau": tau, "delta": config.committee.delta, "decided": len(committee),
                      "accuracy": _accuracy(current, [c["label"] for c in committee]),
                      "auc": _round(roc_auc([float(sum(c["means"]) / len(c["means"])) for c in committee],
                                            [c["label"] for c in committee])),
                      **{k: current.count(k) for k in ("accept", "adjudicate", "reject")}},
        "grid": grid,
    }


def _decide(c: dict, tau: float, delta: float) -> str:
    if not c["checks_pass"]:
        return "reject"
    return committee_rule(c["means"], tau=tau, delta=delta)[0]


def _accuracy(outcomes: list[str], labels: list[int]) -> float | None:
    """Accept counts as 'good', reject as 'bad'; disputed samples (adjudicate) are left out."""
    decided = [(o == "accept", l == 1) for o, l in zip(outcomes, labels) if o != "adjudicate"]
    return round(sum(p == g for p, g in decided) / len(decided), 3) if decided else None


def _round(x):
    return None if x is None else round(x, 3)


def format_report(r: dict) -> str:
    c = r["committee"]
    lines = [f"{r['samples']} labelled samples ({r['good']} good), {r['reviews']} reviews, {r['quarantined']} quarantined",
             "", "per reviewer model (good = mean >= tau and every instruction check passed)",
             f"  {'model':<20}{'reviews':>8}{'accuracy':>10}{'AUC':>8}"]
    lines += [f"  {m['model']:<20}{m['reviews']:>8}{_fmt(m['accuracy']):>10}{_fmt(m['auc']):>8}" for m in r["per_model"]]
    lines += ["", f"committee at tau {c['tau']}, delta {c['delta']}: accept {c['accept']}, adjudicate {c['adjudicate']}, "
                  f"reject {c['reject']}; accuracy {_fmt(c['accuracy'])} (disputed left out), AUC of the mean {_fmt(c['auc'])}",
              "", "what tau and delta would do", f"  {'tau':>5}{'delta':>7}{'accept':>8}{'adjud.':>8}{'reject':>8}{'accuracy':>10}"]
    lines += [f"  {g['tau']:>5}{g['delta']:>7}{g['accept']:>8}{g['adjudicate']:>8}{g['reject']:>8}{_fmt(g['accuracy']):>10}"
              for g in r["grid"]]
    return "\n".join(lines)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
