-- Replays asked of a deployment's live workers (tether deployments check without --code).
CREATE TABLE check_requests (
    request_id     TEXT PRIMARY KEY,
    deployment_id  TEXT NOT NULL,
    body           TEXT NOT NULL,
    created_at     REAL NOT NULL,
    taken_by       TEXT,
    taken_until    REAL,
    answer         TEXT,
    answered_at    REAL
);
CREATE INDEX check_requests_by_deployment ON check_requests (deployment_id, created_at);
