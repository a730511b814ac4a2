-- Drops samples too long to be a single, focused training example.
-- param max_instruction_chars = 2000
-- param max_response_chars = 8000
SELECT id,
       'too_long' AS reason,
       printf('instruction %d chars, response %d chars', length(instruction), length(response)) AS detail
FROM batch
WHERE length(instruction) > $max_instruction_chars
   OR length(response) > $max_response_chars
