-- One spelling per enum: JSON columns and event snapshots now use the same
-- spelling as the text columns (QUEUED, not Queued), attempt outcomes and
-- error codes are typed, and idempotent answers are stored as JSON.
--
-- Not safe to run under the previous version (it cannot read the new
-- spellings): stop it first. This happens once, before the first release;
-- later migrations stay expand-then-contract. Re-running it changes nothing.

-- Answers of idempotent requests, as the domain's JSON. Rows of the previous
-- version keep their encoded `response` and cannot be replayed any more.
ALTER TABLE idempotency ADD COLUMN answer jsonb;
ALTER TABLE idempotency ALTER COLUMN response DROP NOT NULL;

-- Condition status TRUE/FALSE/UNKNOWN (type and reason keep their
-- Kubernetes-style CamelCase names, which are their only spelling).
CREATE FUNCTION pg_temp.upper_conditions(cs jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_set(c, '{status}', to_jsonb(upper(c->>'status')))), '[]'::jsonb)
    FROM jsonb_array_elements(cs) AS c
$$;

UPDATE clusters SET conditions = pg_temp.upper_conditions(conditions)
WHERE jsonb_array_length(conditions) > 0;

UPDATE cluster_events SET snapshot = jsonb_set(jsonb_set(jsonb_set(snapshot,
        '{state}', to_jsonb(upper(snapshot->>'state'))),
        '{health}', to_jsonb(upper(snapshot->>'health'))),
        '{conditions}', pg_temp.upper_conditions(snapshot->'conditions'));

UPDATE operations SET stages = (
    SELECT coalesce(jsonb_agg(jsonb_set(s, '{state}', to_jsonb(upper(s->>'state')))), '[]'::jsonb)
    FROM jsonb_array_elements(stages) AS s
);

-- An attempt's outcome: null while it runs, else {"kind": ..., ...}.
UPDATE operations SET attempt_log = (
    SELECT coalesce(jsonb_agg(jsonb_set(a, '{outcome}', CASE
        WHEN jsonb_typeof(a->'outcome') <> 'string' THEN a->'outcome'
        WHEN a->>'outcome' = '' THEN 'null'::jsonb
        WHEN a->>'outcome' = 'succeeded' THEN '{"kind": "SUCCEEDED"}'::jsonb
        WHEN a->>'outcome' = 'handed back' THEN '{"kind": "HANDED_BACK"}'::jsonb
        WHEN a->>'outcome' = 'lease expired' THEN '{"kind": "LEASE_EXPIRED"}'::jsonb
        WHEN a->>'outcome' = 'worker disconnected' THEN '{"kind": "WORKER_DISCONNECTED"}'::jsonb
        WHEN a->>'outcome' LIKE 'cancelled%' THEN '{"kind": "CANCELLED"}'::jsonb
        WHEN a->>'outcome' LIKE 'stalled: %' THEN
            jsonb_build_object('kind', 'STALLED', 'check', substr(a->>'outcome', 10))
        WHEN a->>'outcome' LIKE 'failed: %' THEN jsonb_build_object('kind', 'FAILED',
            'reason', split_part(substr(a->>'outcome', 9), ': ', 1),
            'message', substr(a->>'outcome', 9 + length(split_part(substr(a->>'outcome', 9), ': ', 1)) + 2))
        ELSE jsonb_build_object('kind', 'FAILED', 'reason', 'UNKNOWN', 'message', a->>'outcome')
    END)), '[]'::jsonb)
    FROM jsonb_array_elements(attempt_log) AS a
) WHERE jsonb_array_length(attempt_log) > 0;

-- An operation error's code by name.
UPDATE operations SET error = jsonb_set(error, '{code}', to_jsonb(CASE error->>'code'
        WHEN '3' THEN 'INVALID_ARGUMENT'
        WHEN '9' THEN 'FAILED_PRECONDITION'
        WHEN '14' THEN 'UNAVAILABLE'
        WHEN '1' THEN 'CANCELLED'
        ELSE 'INTERNAL' END))
WHERE error IS NOT NULL AND jsonb_typeof(error->'code') = 'number';
