-- The PostgreSQL twin declares tokens.serial, operators.name and siem_cursors.sink
-- `COLLATE "C"` so that they order bytewise whatever the database's collation. SQLite's
-- default collation (BINARY) already compares text bytewise: nothing to change here.
SELECT 1;
