-- Drops responses that mostly repeat the instruction (word-set Jaccard overlap).
-- param max_overlap = 0.8
-- The word lists are distinct, so their union has len(i) + len(r) - common words: one intersection
-- per row instead of building the union (twice the time on a 16k-row batch).
WITH words AS (
    SELECT id,
           list_distinct(string_split_regex(lower(trim(instruction)), '\W+')) AS i,
           list_distinct(string_split_regex(lower(trim(response)), '\W+')) AS r
    FROM batch
), sizes AS (
    SELECT id, common, len(i) + len(r) - common AS total
    FROM (SELECT id, i, r, len(list_intersect(i, r)) AS common FROM words)
)
SELECT id,
       'copies_instruction' AS reason,
       printf('word overlap %.2f', common / total) AS detail
FROM sizes
WHERE total > 0 AND common / total > $max_overlap
