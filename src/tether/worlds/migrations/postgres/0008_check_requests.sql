-- Replays asked of a deployment's live workers (tether deployments check without --code).
CREATE TABLE check_requests (
    request_id     TEXT PRIMARY KEY,
    deployment_id  TEXT NOT NULL,
    body           TEXT NOT NULL,
    created_at     double precision NOT NULL,
    taken_by       TEXT,
    taken_until    double precision,
    answer         TEXT,
    answered_at    double precision
);
CREATE INDEX check_requests_by_deployment ON check_requests (deployment_id, created_at);
