-- Drops samples whose instruction or response is too short to teach anything.
-- param min_instruction_chars = 10
-- param min_response_chars = 20
SELECT id,
       'too_short' AS reason,
       printf('instruction %d chars, response %d chars', length(trim(instruction)), length(trim(response))) AS detail
FROM batch
WHERE length(trim(instruction)) < $min_instruction_chars
   OR length(trim(response)) < $min_response_chars
