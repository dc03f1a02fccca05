-- The person a token belongs to (required for new tokens). Tokens created
-- before owners existed have '' and cannot count in an approval.
ALTER TABLE tokens ADD COLUMN owner TEXT NOT NULL DEFAULT '';
