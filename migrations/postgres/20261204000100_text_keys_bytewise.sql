-- Text keys the lists order and page by compare bytewise, as SQLite compares text, whatever
-- the database's collation (a Debian cluster initialised under en_US.UTF-8 orders `a_2 < a-1
-- < A0 < B`; bytewise it is `A0 < B < a-1 < a_2`). The queries already say `COLLATE "C"`;
-- declaring the columns so makes their unique indexes bytewise too, so that the token list's
-- keyset (`serial > $cursor ORDER BY serial`) is a range of the serial index rather than a sort
-- of the whole table per page: an index is used only for the collation it was built with.
--
-- Same type, new collation: no row is rewritten, the indexes on the columns are rebuilt
-- (under a brief ACCESS EXCLUSIVE lock). Equality, and so uniqueness, is unchanged: a
-- deterministic collation's equality is byte equality.
ALTER TABLE tokens ALTER COLUMN serial TYPE TEXT COLLATE "C";
ALTER TABLE operators ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE siem_cursors ALTER COLUMN sink TYPE TEXT COLLATE "C";
