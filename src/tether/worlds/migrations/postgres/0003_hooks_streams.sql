-- Hooks (payloads from outside) and streams (chunks for readers outside).
CREATE TABLE hooks (
    run_id         text NOT NULL,
    hook_id        text NOT NULL,
    token          text NOT NULL,
    status         text NOT NULL,
    webhook        boolean NOT NULL,
    metadata       text,
    created_at     double precision NOT NULL,
    disposed_at    double precision,
    PRIMARY KEY (run_id, hook_id)
);
-- A token belongs to at most one active hook.
CREATE UNIQUE INDEX hooks_active_token ON hooks (token) WHERE status = 'active';
CREATE INDEX hooks_by_token ON hooks (token, created_at);

CREATE TABLE streams (
    stream_id   text PRIMARY KEY,
    run_id      text NOT NULL,
    namespace   text NOT NULL,
    next_index  integer NOT NULL,
    closed      boolean NOT NULL,
    created_at  double precision NOT NULL,
    closed_at   double precision
);
CREATE INDEX streams_by_run ON streams (run_id);

CREATE TABLE stream_chunks (
    stream_id   text NOT NULL,
    idx         integer NOT NULL,
    data        text NOT NULL,
    created_at  double precision NOT NULL,
    PRIMARY KEY (stream_id, idx)
);
