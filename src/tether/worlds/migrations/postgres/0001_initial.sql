-- Runs, their event log, the views derived from it, and the task queue.
-- Timestamps are epoch seconds (double precision), as the World protocol passes them.
CREATE TABLE runs (
    run_id         text PRIMARY KEY,
    workflow_name  text NOT NULL,
    deployment_id  text NOT NULL,
    status         text NOT NULL,
    input          text NOT NULL,
    output         text,
    error          text,
    parent_run_id  text,
    rerun_of       text,
    created_at     double precision NOT NULL,
    started_at     double precision,
    completed_at   double precision,
    last_seq       integer NOT NULL
);
CREATE INDEX runs_by_created ON runs (created_at, run_id);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_workflow ON runs (workflow_name, created_at);
CREATE INDEX runs_by_parent ON runs (parent_run_id);
CREATE INDEX runs_by_deployment ON runs (deployment_id, status);

CREATE TABLE events (
    run_id          text NOT NULL,
    seq             integer NOT NULL,
    type            text NOT NULL,
    correlation_id  text,
    name            text,
    payload         text,
    attrs           text,
    created_at      double precision NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE steps (
    run_id        text NOT NULL,
    step_id       text NOT NULL,
    step_name     text NOT NULL,
    status        text NOT NULL,
    attempt       integer NOT NULL,
    input         text NOT NULL,
    output        text,
    error         text,
    created_at    double precision NOT NULL,
    started_at    double precision,
    completed_at  double precision,
    retry_at      double precision,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE waits (
    run_id        text NOT NULL,
    wait_id       text NOT NULL,
    status        text NOT NULL,
    resume_at     double precision NOT NULL,
    created_at    double precision NOT NULL,
    completed_at  double precision,
    PRIMARY KEY (run_id, wait_id)
);

-- One row per unit of work. A leased row's available_at is its lease expiry,
-- so "due" (available_at <= now) covers new work and work of dead workers alike.
CREATE TABLE tasks (
    task_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL,
    run_id         text NOT NULL,
    step_id        text NOT NULL DEFAULT '',
    deployment_id  text NOT NULL,
    available_at   double precision NOT NULL,
    lease_owner    text,
    UNIQUE (run_id, kind, step_id)
);
CREATE INDEX tasks_due ON tasks (deployment_id, available_at);
CREATE INDEX tasks_by_lease_owner ON tasks (lease_owner) WHERE lease_owner IS NOT NULL;
