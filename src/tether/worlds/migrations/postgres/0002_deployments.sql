-- Deployments (code versions) and the workers that serve them.
CREATE TABLE deployments (
    deployment_id  text PRIMARY KEY,
    environment    text NOT NULL,
    manifest       text NOT NULL,
    created_at     double precision NOT NULL
);
CREATE INDEX deployments_by_environment ON deployments (environment, created_at);

CREATE TABLE workers (
    worker_id      text PRIMARY KEY,
    deployment_id  text NOT NULL,
    hostname       text NOT NULL,
    pid            integer NOT NULL,
    started_at     double precision NOT NULL,
    heartbeat_at   double precision NOT NULL,
    stopped_at     double precision
);
CREATE INDEX workers_by_deployment ON workers (deployment_id, heartbeat_at);
