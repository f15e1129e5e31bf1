-- A deployment's runs by status (PostgreSQL has had it since 0001): the deployments
-- page and list counts read a deployment's runs in flight without scanning all runs.
CREATE INDEX runs_by_deployment ON runs (deployment_id, status);
