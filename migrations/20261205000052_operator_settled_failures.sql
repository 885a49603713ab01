-- Console sign-in: how many of the counted failures have finished their password check.
-- A right password takes back its own attempt and the failures that had settled before it
-- was admitted (the operator's own typos), never guesses still in flight beside it.
ALTER TABLE operators ADD COLUMN settled_failures integer NOT NULL DEFAULT 0;
