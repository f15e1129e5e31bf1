-- Each worker's load, from its heartbeats: the share of one core its process used since
-- the beat before, or of its concurrency in use, whichever is more. Work that falls due for a deployment wakes the busiest of its live
-- workers that still has room, so that work packs onto few processes (their commits
-- stay large) and spills to the next only when one is busy. 0 until a worker reports.
ALTER TABLE workers ADD COLUMN cpu_load double precision NOT NULL DEFAULT 0;
