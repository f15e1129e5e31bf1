-- Hooks (payloads from outside) and streams (chunks for readers outside).
CREATE TABLE hooks (
    run_id         TEXT NOT NULL,
    hook_id        TEXT NOT NULL,
    token          TEXT NOT NULL,
    status         TEXT NOT NULL,
    webhook        INTEGER NOT NULL,
    metadata       TEXT,
    created_at     REAL NOT NULL,
    disposed_at    REAL,
    PRIMARY KEY (run_id, hook_id)
) WITHOUT ROWID;
-- A token belongs to at most one active hook.
CREATE UNIQUE INDEX hooks_active_token ON hooks (token) WHERE status = 'active';

CREATE TABLE streams (
    stream_id   TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    next_index  INTEGER NOT NULL,
    closed      INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    closed_at   REAL
) WITHOUT ROWID;
CREATE INDEX streams_by_run ON streams (run_id);

CREATE TABLE stream_chunks (
    stream_id   TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    data        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (stream_id, idx)
) WITHOUT ROWID;
