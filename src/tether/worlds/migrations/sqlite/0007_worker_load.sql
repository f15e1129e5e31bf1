-- Each worker's load, from its heartbeats: the share of one core its process used since
-- the beat before, or of its concurrency in use, whichever is more (PostgreSQL picks whom to wake by it; SQLite keeps it for the views).
ALTER TABLE workers ADD COLUMN cpu_load REAL NOT NULL DEFAULT 0;
