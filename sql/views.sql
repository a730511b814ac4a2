-- Derived views over the run's tables. `gra-stream sql` defines them after one view per table
-- (see docs/tables.md to define them yourself in plain DuckDB).

-- Every row that left the pipeline, with the stage that dropped it and why.
CREATE OR REPLACE VIEW rejections AS
SELECT id, 'ingest' AS stage, reason, printf('%s:%d %s', source, line, raw) AS detail, NULL AS duplicate_of
  FROM ingest_errors
UNION ALL
SELECT id, 'profile', 'parse_error', error, NULL FROM profiles WHERE status <> 'ok'
UNION ALL
SELECT id, 'generate', 'parse_error', error, NULL FROM generations WHERE status <> 'ok'
UNION ALL
SELECT id, 'gate', reason, detail, duplicate_of FROM gates WHERE NOT passed
UNION ALL
SELECT v.id, 'decide', v.reason,
       CASE WHEN v.mean IS NULL THEN printf('reviews=%d parsed, fewer than min_reviews (the replies that did not parse are in quarantine)', v.n_reviews)
            ELSE concat_ws('; ', c.failed, printf('mean=%.3f std=%.3f reviews=%d', v.mean, v.std, v.n_reviews)) END,
       NULL
  FROM verdicts v
  -- which reviewer failed which instruction check ("qwen: not complete"); a query that does not read
  -- detail (status counts by reason) does not make this join
  LEFT JOIN (SELECT generation_id,
                    string_agg(model || ': ' || concat_ws(', ', CASE WHEN NOT reasonable THEN 'not reasonable' END,
                                                          CASE WHEN NOT complete THEN 'not complete' END,
                                                          CASE WHEN NOT clear THEN 'not clear' END),
                               '; ' ORDER BY reviewer_index) AS failed
               FROM reviews WHERE status = 'ok' AND NOT (reasonable AND complete AND clear)
               GROUP BY generation_id) c ON c.generation_id = v.id AND v.reason = 'instruction_check_failed'
  WHERE v.decision = 'reject'
UNION ALL
SELECT id, 'adjudicate',
       CASE WHEN status <> 'ok' THEN 'adjudicator_parse_error' ELSE 'adjudicator_rejected' END,
       CASE WHEN status <> 'ok' THEN error ELSE printf('adjudicator mean=%.3f: %s', mean, comment) END, NULL
  FROM adjudications WHERE status <> 'ok' OR NOT keep
UNION ALL
SELECT id, 'diversity', 'too_similar', printf('cosine similarity %.3f', similarity), duplicate_of
  FROM diversity WHERE NOT kept;

-- Model replies that never parsed, and seed rows that could not be read, with the raw text.
CREATE OR REPLACE VIEW quarantine AS
SELECT id, 'profile' AS stage, model, error, raw, attempts FROM profiles WHERE status = 'quarantined'
UNION ALL SELECT id, 'generate', model, error, raw, attempts FROM generations WHERE status = 'quarantined'
UNION ALL SELECT id, 'review', model, error, raw, attempts FROM reviews WHERE status = 'quarantined'
UNION ALL SELECT id, 'adjudicate', model, error, raw, attempts FROM adjudications WHERE status = 'quarantined'
UNION ALL SELECT id, 'annotate', model, error, raw, attempts FROM annotations WHERE status = 'quarantined'
UNION ALL SELECT id, 'ingest', NULL, reason, raw, 0 FROM ingest_errors;

-- One row per logical LLM call (re-asks included in attempts and tokens).
CREATE OR REPLACE VIEW calls AS
SELECT id, 'profile' AS role, model, status, prompt_tokens, completion_tokens, latency_s, attempts, truncated, retries, wait_s FROM profiles
UNION ALL SELECT id, 'generator', model, status, prompt_tokens, completion_tokens, latency_s, attempts, truncated, retries, wait_s FROM generations
UNION ALL SELECT id, 'reviewer', model, status, prompt_tokens, completion_tokens, latency_s, attempts, truncated, retries, wait_s FROM reviews WHERE status <> 'skipped'
UNION ALL SELECT id, 'adjudicator', model, status, prompt_tokens, completion_tokens, latency_s, attempts, truncated, retries, wait_s FROM adjudications
UNION ALL SELECT id, 'annotator', model, status, prompt_tokens, completion_tokens, latency_s, attempts, truncated, retries, wait_s FROM annotations;

-- The final outcome of every generation that reached a verdict: the committee's decision and, where the
-- reviewers disagreed, what the adjudicator made of it; then the later filters.
CREATE OR REPLACE VIEW decisions AS
SELECT v.id, v.decision AS committee, v.mean, v.std, a.mean AS adjudicator_mean,
       CASE WHEN s.id IS NOT NULL THEN 'kept'
            WHEN d.kept = false THEN 'too_similar'
            WHEN v.decision = 'reject' THEN 'rejected'
            WHEN v.decision = 'adjudicate' AND a.id IS NULL THEN 'pending'
            WHEN v.decision = 'adjudicate' AND NOT coalesce(a.keep, false) THEN 'rejected by adjudicator'
            ELSE 'pending' END AS outcome
FROM verdicts v LEFT JOIN adjudications a ON a.id = v.id LEFT JOIN diversity d ON d.id = v.id
LEFT JOIN samples s ON s.id = v.id;
