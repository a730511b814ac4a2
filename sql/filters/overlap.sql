-- Drops responses that mostly repeat the instruction (word-set Jaccard overlap).
-- param max_overlap = 0.8
WITH words AS (
    SELECT id,
           list_distinct(string_split_regex(lower(trim(instruction)), '\W+')) AS i,
           list_distinct(string_split_regex(lower(trim(response)), '\W+')) AS r
    FROM batch
)
SELECT id,
       'copies_instruction' AS reason,
       printf('word overlap %.2f', len(list_intersect(i, r)) / len(list_distinct(list_concat(i, r)))) AS detail
FROM words
WHERE len(list_distinct(list_concat(i, r))) > 0
  AND len(list_intersect(i, r)) / len(list_distinct(list_concat(i, r))) > $max_overlap
