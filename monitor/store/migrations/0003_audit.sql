-- Accounts (second factor, lockout) and the hash-chained audit log.

ALTER TABLE users
    ADD COLUMN totp_secret     text,
    ADD COLUMN totp_enabled    boolean NOT NULL DEFAULT false,
    ADD COLUMN totp_last_step  bigint,
    ADD COLUMN locked_at       timestamptz;

-- Failed logins, counted over a sliding 15 minutes for the lockout.
CREATE TABLE login_failures (
    username  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    source    text
);
CREATE INDEX login_failures_user ON login_failures (username, at);

-- Every consultation of location data and every change, with who, when, what, the
-- reason or the before/after. Append-only: triggers refuse UPDATE, DELETE and TRUNCATE
-- for every role that does not disable them. Each row carries the SHA-256 of its
-- content chained to the previous row's hash, so an edit made behind the triggers' back
-- breaks the chain at that row (`monitor audit verify`).
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text NOT NULL,
    action       text NOT NULL,
    object_type  text NOT NULL,
    object_id    text,
    subject_id   uuid,
    source       text,
    outcome      text NOT NULL DEFAULT 'ok',
    reason       text,
    range_from   timestamptz,
    range_until  timestamptz,
    before       jsonb,
    after        jsonb,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject_id, at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);

-- The digest of a row's content after its predecessor's hash. Times in UTC with
-- microseconds, so the text is the same whatever the session's time zone.
CREATE FUNCTION audit_digest(prev bytea, r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(concat_ws('|',
        r.id::text,
        to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        r.actor, r.action, r.object_type, coalesce(r.object_id, ''),
        coalesce(r.subject_id::text, ''), coalesce(r.source, ''), r.outcome,
        coalesce(r.reason, ''),
        coalesce(to_char(r.range_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), ''),
        coalesce(to_char(r.range_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), ''),
        coalesce(r.before::text, ''), coalesce(r.after::text, '')), 'UTF8'))
$$;

CREATE FUNCTION audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous bytea;
BEGIN
    -- One append at a time, so each row chains to the one committed before it.
    PERFORM pg_advisory_xact_lock(7140001);
    SELECT hash INTO previous FROM audit_log ORDER BY id DESC LIMIT 1;
    NEW.id := nextval('audit_log_id_seq');
    NEW.at := clock_timestamp();
    NEW.prev_hash := coalesce(previous, '\x'::bytea);
    NEW.hash := audit_digest(NEW.prev_hash, NEW);
    RETURN NEW;
END
$$;

CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END
$$;

CREATE TRIGGER audit_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_chain();
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();

-- The consultation log lives in audit_log from now on.
INSERT INTO audit_log (actor, action, object_type, object_id, subject_id, reason, range_from,
                       range_until, prev_hash, hash)
SELECT username, 'read', what, NULL, subject_id, reason, range_from, range_until, '', ''
FROM consultations ORDER BY id;
DROP TABLE consultations;
