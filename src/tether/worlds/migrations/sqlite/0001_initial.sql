-- Runs, their event log, the views derived from it, and the task queue.
CREATE TABLE runs (
    run_id         TEXT PRIMARY KEY,
    workflow_name  TEXT NOT NULL,
    deployment_id  TEXT NOT NULL,
    status         TEXT NOT NULL,
    input          TEXT NOT NULL,
    output         TEXT,
    error          TEXT,
    parent_run_id  TEXT,
    rerun_of       TEXT,
    created_at     REAL NOT NULL,
    started_at     REAL,
    completed_at   REAL,
    last_seq       INTEGER NOT NULL
);
CREATE INDEX runs_by_created ON runs (created_at, run_id);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_workflow ON runs (workflow_name, created_at);
CREATE INDEX runs_by_parent ON runs (parent_run_id);

CREATE TABLE events (
    run_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    type            TEXT NOT NULL,
    correlation_id  TEXT,
    name            TEXT,
    payload         TEXT,
    attrs           TEXT,
    created_at      REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    step_id       TEXT NOT NULL,
    step_name     TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    error         TEXT,
    created_at    REAL NOT NULL,
    started_at    REAL,
    completed_at  REAL,
    retry_at      REAL,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;

CREATE TABLE waits (
    run_id        TEXT NOT NULL,
    wait_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    resume_at     REAL NOT NULL,
    created_at    REAL NOT NULL,
    completed_at  REAL,
    PRIMARY KEY (run_id, wait_id)
) WITHOUT ROWID;

-- One row per unit of work. A leased row's available_at is its lease expiry,
-- so "due" (available_at <= now) covers new work and work of dead workers alike.
CREATE TABLE tasks (
    task_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    step_id        TEXT NOT NULL DEFAULT '',
    deployment_id  TEXT NOT NULL,
    available_at   REAL NOT NULL,
    lease_owner    TEXT,
    UNIQUE (run_id, kind, step_id)
);
CREATE INDEX tasks_due ON tasks (deployment_id, available_at);
