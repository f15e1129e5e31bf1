-- Find the reruns of a run.
CREATE INDEX runs_by_rerun ON runs (rerun_of);
