-- Drops responses that refuse or deflect instead of answering.
-- param pattern = "^ *(i'm sorry|i am sorry|sorry, but|i cannot|i can't|i can not|as an ai|i'm unable|i am unable)"
SELECT id,
       'refusal' AS reason,
       left(response, 80) AS detail
FROM batch
WHERE regexp_matches(lower(response), $pattern)
