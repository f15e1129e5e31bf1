-- tether_append again, for hook metadata and attrs holding any text (NUL included).
-- PostgreSQL's json operators (-> and ->>) fail on a document that holds the escape
-- \u0000 anywhere ("unsupported Unicode escape sequence"): 0006 read every field of
-- an event with them, so one hook created with metadata holding a NUL (json.dumps
-- writes it \u0000) failed the commit of its run's activation, on every replay.
-- Now each event's attrs may come as a JSON string holding their JSON text (stored as
-- it is), and an event whose attrs hold hook metadata comes with an eighth element,
-- the attrs the projection reads, where the metadata is itself a string of its JSON
-- text: nothing the operators parse holds a \u0000 escape. A writer of 0006's form
-- (attrs as a JSON object, seven elements) is still understood: a process of an
-- older tether, running beside one that applied this migration, keeps working.
-- What is stored is unchanged: events.attrs and hooks.metadata hold the same text.
--
-- What it does, as in 0005 and 0006: append a run's events and derive the views from
-- them, in one statement. The writer calls it once per operation instead of sending a
-- statement per event and view, which is most of a commit's client-side cost.
--
-- p_expected_seq: when not NULL (the writer's fast path), lock the run first and
-- raise SQLSTATE TT001 unless it is active, of p_deployment_id, and at that seq;
-- the writer then runs its batch again on its careful path, which reads first.
-- p_worker_id / p_lease: steps created here are leased to that worker (an
-- activation); NULL leaves them due at once for any worker.
-- p_schedule: afterwards, make the run's workflow task its earliest pending sleep.
-- A hook whose token another active hook holds is answered at once
-- (hook_disposed, reason "conflict") and the run queued for a workflow task.
CREATE OR REPLACE FUNCTION tether_append(
    p_run_id text,
    p_deployment_id text,
    p_expected_seq integer,
    p_events json,
    p_worker_id text,
    p_lease double precision,
    p_schedule boolean,
    p_now double precision
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_seq integer[];
    v_type text[];
    v_correlation_id text[];
    v_name text[];
    v_payload text[];
    v_attrs_all text[];
    v_view_all text[];
    v_created_at double precision[];
    v_n integer;
    v_last integer;
    v_started_at double precision;
    v_conflicts integer := 0;
    v_t text;
    v_cid text;
    v_at double precision;
    v_attrs json;
    v_token text;
    v_meta text;
    v_starts boolean;
    v_run_seq integer;
    v_run_deployment text;
    v_run_status text;
BEGIN
    IF p_expected_seq IS NOT NULL THEN
        SELECT last_seq, deployment_id, status INTO v_run_seq, v_run_deployment, v_run_status
          FROM runs WHERE run_id = p_run_id FOR UPDATE;
        IF NOT FOUND OR v_run_seq <> p_expected_seq OR v_run_deployment <> p_deployment_id
           OR v_run_status NOT IN ('pending', 'running') THEN
            RAISE EXCEPTION 'run % is no longer at seq %', p_run_id, p_expected_seq
                USING ERRCODE = 'TT001';
        END IF;
    END IF;
    -- p_events: [[seq, type, correlation_id, name, payload, attrs, created_at, view], ...]
    -- attrs: their JSON text as a string (or, from an older writer, the object itself);
    -- view, when present: the attrs to read, hook metadata as a string of its JSON text.
    SELECT array_agg((e ->> 0)::integer ORDER BY k), array_agg(e ->> 1 ORDER BY k),
           array_agg(e ->> 2 ORDER BY k), array_agg(e ->> 3 ORDER BY k),
           array_agg(e ->> 4 ORDER BY k),
           array_agg(CASE json_typeof(e -> 5) WHEN 'null' THEN NULL
                     WHEN 'string' THEN e ->> 5 ELSE (e -> 5)::text END ORDER BY k),
           array_agg(CASE json_typeof(e -> 7) WHEN 'object' THEN (e -> 7)::text END ORDER BY k),
           array_agg((e ->> 6)::double precision ORDER BY k)
      INTO v_seq, v_type, v_correlation_id, v_name, v_payload, v_attrs_all, v_view_all,
           v_created_at
      FROM json_array_elements(p_events) WITH ORDINALITY AS x(e, k);
    v_n := coalesce(cardinality(v_seq), 0);
    INSERT INTO events (run_id, seq, type, correlation_id, name, payload, attrs, created_at)
    SELECT p_run_id, u.seq, u.type, u.cid, u.name, u.payload, u.attrs, u.at
      FROM unnest(v_seq, v_type, v_correlation_id, v_name, v_payload, v_attrs_all, v_created_at)
           AS u(seq, type, cid, name, payload, attrs, at);
    v_last := v_seq[v_n];
    FOR i IN 1..v_n LOOP
        v_t := v_type[i];
        v_cid := v_correlation_id[i];
        v_at := v_created_at[i];
        v_attrs := coalesce(v_view_all[i], v_attrs_all[i])::json;
        IF v_t = 'run_started' THEN
            v_started_at := v_at;
        ELSIF v_t = 'step_started' AND i > 1 AND v_type[i - 1] = 'step_created'
              AND v_correlation_id[i - 1] = v_cid THEN
            NULL;  -- claimed in the commit that created it: inserted as running
        ELSIF v_t IN ('run_completed', 'run_failed', 'run_cancelled') THEN
            UPDATE runs SET status = substr(v_t, 5),
                   output = CASE WHEN v_t = 'run_completed' THEN v_payload[i] ELSE output END,
                   error = CASE WHEN v_t = 'run_completed' THEN error ELSE v_payload[i] END,
                   completed_at = v_at
             WHERE run_id = p_run_id;
            DELETE FROM tasks WHERE run_id = p_run_id;
            UPDATE steps SET status = 'cancelled'
             WHERE run_id = p_run_id AND status IN ('pending', 'running', 'retrying');
            UPDATE waits SET status = 'cancelled' WHERE run_id = p_run_id AND status = 'waiting';
            UPDATE hooks SET status = CASE status WHEN 'active' THEN 'disposed' ELSE status END,
                   disposed_at = CASE status WHEN 'active' THEN v_at ELSE disposed_at END
             WHERE run_id = p_run_id;
        ELSIF v_t = 'step_created' THEN
            v_starts := i < v_n AND v_type[i + 1] = 'step_started'
                        AND v_correlation_id[i + 1] = v_cid;
            INSERT INTO steps (run_id, step_id, step_name, status, attempt, input, created_at,
                               started_at)
            VALUES (p_run_id, v_cid, v_name[i],
                    CASE WHEN v_starts THEN 'running' ELSE 'pending' END,
                    CASE WHEN v_starts
                         THEN coalesce((coalesce(v_view_all[i + 1], v_attrs_all[i + 1])::json
                                        ->> 'attempt')::integer, 1)
                         ELSE 0 END,
                    coalesce(v_payload[i], ''), v_at,
                    CASE WHEN v_starts THEN v_created_at[i + 1] END);
            INSERT INTO tasks (kind, run_id, step_id, deployment_id, available_at, lease_owner)
            VALUES ('step', p_run_id, v_cid, p_deployment_id,
                    v_at + CASE WHEN p_worker_id IS NULL THEN 0 ELSE p_lease END, p_worker_id);
        ELSIF v_t = 'step_started' THEN
            UPDATE steps SET status = 'running',
                   attempt = coalesce((v_attrs ->> 'attempt')::integer, 1), started_at = v_at
             WHERE run_id = p_run_id AND step_id = v_cid;
        ELSIF v_t IN ('step_completed', 'step_failed') THEN
            UPDATE steps SET status = substr(v_t, 6),
                   output = CASE WHEN v_t = 'step_completed' THEN v_payload[i] ELSE output END,
                   error = CASE WHEN v_t = 'step_completed' THEN error ELSE v_payload[i] END,
                   completed_at = v_at
             WHERE run_id = p_run_id AND step_id = v_cid;
            DELETE FROM tasks WHERE run_id = p_run_id AND kind = 'step' AND step_id = v_cid;
        ELSIF v_t = 'step_retrying' THEN
            UPDATE steps SET status = 'retrying', error = v_payload[i],
                   retry_at = coalesce((v_attrs ->> 'retry_at')::double precision, v_at)
             WHERE run_id = p_run_id AND step_id = v_cid;
            UPDATE tasks SET available_at = coalesce((v_attrs ->> 'retry_at')::double precision, v_at),
                   lease_owner = NULL
             WHERE run_id = p_run_id AND kind = 'step' AND step_id = v_cid;
        ELSIF v_t = 'hook_created' THEN
            v_token := v_attrs ->> 'token';
            IF v_view_all[i] IS NOT NULL THEN
                v_meta := v_attrs ->> 'metadata';  -- its JSON text; NULL for null
            ELSIF json_typeof(v_attrs -> 'metadata') <> 'null' THEN
                v_meta := (v_attrs -> 'metadata')::text;  -- an older writer's form
            ELSE
                v_meta := NULL;
            END IF;
            -- The unique index on active tokens decides, even against a concurrent commit.
            INSERT INTO hooks (run_id, hook_id, token, status, webhook, metadata, created_at)
            VALUES (p_run_id, v_cid, v_token, 'active',
                    coalesce((v_attrs ->> 'webhook')::boolean, false),
                    v_meta, v_at)
            ON CONFLICT (token) WHERE status = 'active' DO NOTHING;
            IF NOT FOUND THEN
                INSERT INTO hooks (run_id, hook_id, token, status, webhook, metadata, created_at)
                VALUES (p_run_id, v_cid, v_token, 'conflict',
                        coalesce((v_attrs ->> 'webhook')::boolean, false),
                        v_meta, v_at);
                v_conflicts := v_conflicts + 1;
                INSERT INTO events (run_id, seq, type, correlation_id, attrs, created_at)
                VALUES (p_run_id, v_last + v_conflicts, 'hook_disposed', v_cid,
                        json_build_object('reason', 'conflict', 'token', v_token)::text, v_at);
            END IF;
        ELSIF v_t = 'hook_disposed' THEN
            UPDATE hooks SET status = CASE status WHEN 'active' THEN 'disposed' ELSE status END,
                   disposed_at = v_at
             WHERE run_id = p_run_id AND hook_id = v_cid;
        ELSIF v_t = 'wait_created' THEN
            INSERT INTO waits (run_id, wait_id, status, resume_at, created_at)
            VALUES (p_run_id, v_cid, 'waiting', (v_attrs ->> 'resume_at')::double precision, v_at);
        ELSIF v_t = 'wait_completed' THEN
            UPDATE waits SET status = 'completed', completed_at = v_at
             WHERE run_id = p_run_id AND wait_id = v_cid;
        END IF;
    END LOOP;
    v_last := v_last + v_conflicts;
    IF v_n = 0 THEN
        NULL;  -- nothing appended (an activation that found no progress): only schedule
    ELSIF v_started_at IS NULL THEN
        UPDATE runs SET last_seq = v_last WHERE run_id = p_run_id;
    ELSE
        UPDATE runs SET last_seq = v_last, started_at = v_started_at,
               status = CASE status WHEN 'pending' THEN 'running' ELSE status END
         WHERE run_id = p_run_id;
    END IF;
    IF p_schedule THEN
        DELETE FROM tasks WHERE run_id = p_run_id AND kind = 'workflow';
        IF v_conflicts > 0 THEN
            -- The conflicts were answered: the workflow has something to read at once
            -- (or since its earliest sleep fell due, if that was earlier).
            INSERT INTO tasks (kind, run_id, deployment_id, available_at)
            SELECT 'workflow', p_run_id, p_deployment_id, least(p_now, min(resume_at))
              FROM waits WHERE run_id = p_run_id AND status = 'waiting';
        ELSE
            INSERT INTO tasks (kind, run_id, deployment_id, available_at)
            SELECT 'workflow', p_run_id, p_deployment_id, min(resume_at) FROM waits
             WHERE run_id = p_run_id AND status = 'waiting' HAVING min(resume_at) IS NOT NULL;
        END IF;
    ELSIF v_conflicts > 0 THEN
        -- Due at once, unless a worker holds the task: its commit re-queues the run.
        INSERT INTO tasks (kind, run_id, deployment_id, available_at)
        VALUES ('workflow', p_run_id, p_deployment_id, p_now)
        ON CONFLICT (run_id, kind, step_id) DO UPDATE
           SET available_at = least(tasks.available_at, excluded.available_at), lease_owner = NULL
         WHERE tasks.lease_owner IS NULL;
    END IF;
END
$$;
