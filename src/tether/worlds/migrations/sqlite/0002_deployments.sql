-- Deployments (code versions) and the workers that serve them.
CREATE TABLE deployments (
    deployment_id  TEXT PRIMARY KEY,
    environment    TEXT NOT NULL,
    manifest       TEXT NOT NULL,
    created_at     REAL NOT NULL
);
CREATE INDEX deployments_by_environment ON deployments (environment, created_at);

CREATE TABLE workers (
    worker_id      TEXT PRIMARY KEY,
    deployment_id  TEXT NOT NULL,
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     REAL NOT NULL,
    heartbeat_at   REAL NOT NULL,
    stopped_at     REAL
);
CREATE INDEX workers_by_deployment ON workers (deployment_id, heartbeat_at);
