-- The initial schema: people, devices, zones, status orders, positions, device events,
-- rejected messages, alerts with their event history, sessions and the consultation log.
-- Positions, device events and alert events are TimescaleDB hypertables.

CREATE TABLE users (
    username       text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('administrator', 'operator', 'officer', 'auditor', 'venue')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled       boolean NOT NULL DEFAULT false
);

-- Opaque bearer tokens, stored only as their SHA-256 so a database dump grants no session.
CREATE TABLE sessions (
    token_hash    bytea PRIMARY KEY,
    username      text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_username ON sessions (username);

CREATE TABLE subjects (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    external_id  text NOT NULL UNIQUE,
    timezone     text NOT NULL,
    officer      text REFERENCES users (username),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subjects_officer ON subjects (officer);

CREATE TABLE devices (
    device_id           text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_-]{3,64}$'),
    kind                text NOT NULL CHECK (kind IN ('bracelet', 'phone', 'owntracks')),
    subject_id          uuid REFERENCES subjects (id),
    assigned_at         timestamptz,
    owntracks_topic     text UNIQUE,
    signed              boolean NOT NULL DEFAULT false,
    signing_key         bytea,
    mqtt_password_hash  text NOT NULL,
    enrolled_at         timestamptz NOT NULL DEFAULT now(),
    fix_interval_s      integer NOT NULL DEFAULT 60,
    upload_interval_s   integer NOT NULL DEFAULT 60,
    CHECK (signed = (signing_key IS NOT NULL)),
    CHECK ((kind = 'owntracks') = (owntracks_topic IS NOT NULL))
);
CREATE INDEX devices_subject ON devices (subject_id);

-- Zones of one subject (subject_id set) or of a shared set used by many (zone_set set).
-- A zone is in force over [valid_from, valid_until); nothing is deleted, so the rules in
-- force at any past instant can be reconstructed.
CREATE TABLE zones (
    id           uuid PRIMARY KEY,
    subject_id   uuid REFERENCES subjects (id),
    zone_set     text,
    kind         text NOT NULL CHECK (kind IN ('home', 'inclusion', 'exclusion')),
    name         text,
    feature      jsonb NOT NULL,
    schedule     jsonb,
    source       text NOT NULL DEFAULT 'zone' CHECK (source IN ('zone', 'status')),
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text,
    CHECK ((subject_id IS NULL) <> (zone_set IS NULL))
);
CREATE INDEX zones_subject ON zones (subject_id);

-- Status orders (red, yellow, blue, green). Each replaces the subject's status rules from
-- its effective_at on; recorded_at orders them when two claim the same period.
CREATE TABLE subject_statuses (
    id            bigserial PRIMARY KEY,
    subject_id    uuid NOT NULL REFERENCES subjects (id),
    status        text NOT NULL CHECK (status IN ('red', 'yellow', 'blue', 'green')),
    home_lon      double precision,
    home_lat      double precision,
    radius_m      double precision,
    zone_id       uuid REFERENCES zones (id),
    effective_at  timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    set_by        text
);
CREATE INDEX subject_statuses_subject ON subject_statuses (subject_id, effective_at);

-- Positions. (device_id, seq, t) is unique with NULLs not distinct: a resent record is
-- stored once, and an OwnTracks location (no seq) once per (device, tst).
CREATE TABLE fixes (
    device_id    text NOT NULL,
    seq          bigint,
    t            timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    subject_id   uuid,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    acc          real NOT NULL,
    src          text NOT NULL,
    spd          real,
    batt         smallint
);
SELECT create_hypertable('fixes', 't', chunk_time_interval => INTERVAL '1 day');
CREATE UNIQUE INDEX fixes_record ON fixes (device_id, seq, t) NULLS NOT DISTINCT;
CREATE INDEX fixes_subject_t ON fixes (subject_id, t) WHERE subject_id IS NOT NULL;

CREATE TABLE device_events (
    device_id    text NOT NULL,
    seq          bigint,
    t            timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    subject_id   uuid,
    kind         text NOT NULL,
    detail       jsonb
);
SELECT create_hypertable('device_events', 't', chunk_time_interval => INTERVAL '7 days');
CREATE UNIQUE INDEX device_events_record ON device_events (device_id, seq, t) NULLS NOT DISTINCT;
CREATE INDEX device_events_subject_t ON device_events (subject_id, t) WHERE subject_id IS NOT NULL;

-- Everything refused, with its raw bytes and the reason, for operators to inspect. A
-- refused record of an accepted upload has its seq here: it counts as accounted for.
CREATE TABLE rejected_messages (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    device_id    text,
    seq          bigint,
    reason       text NOT NULL,
    raw          bytea NOT NULL,
    record       jsonb
);
CREATE INDEX rejected_messages_received ON rejected_messages (received_at);
CREATE UNIQUE INDEX rejected_messages_record ON rejected_messages (device_id, seq)
    WHERE seq IS NOT NULL;

-- The acknowledgement watermark: every record of the device with seq <= upto is stored
-- (or refused with a reason, or declared a data gap).
CREATE TABLE device_acks (
    device_id   text PRIMARY KEY,
    upto        bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE alert_event_ids;

CREATE TABLE alerts (
    id               uuid PRIMARY KEY,
    alert_no         bigserial UNIQUE,
    subject_id       uuid REFERENCES subjects (id),
    device_id        text,
    kind             text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('critical', 'serious', 'warning', 'info')),
    state            text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    rule_key         text,
    zone_id          uuid,
    fix_time         timestamptz,
    received_at      timestamptz NOT NULL,
    lat              double precision,
    lon              double precision,
    detail           jsonb NOT NULL DEFAULT '{}',
    event_id         bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    cleared_at       timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    resolved_by      text,
    resolution_note  text
);
CREATE INDEX alerts_unresolved ON alerts (alert_no) WHERE state <> 'resolved';
CREATE INDEX alerts_subject ON alerts (subject_id, alert_no);
CREATE INDEX alerts_state ON alerts (state, alert_no);

-- Every change of an alert, in commit order (event ids are taken under a transaction
-- advisory lock, so a larger id is never committed before a smaller one).
CREATE TABLE alert_events (
    event_id    bigint NOT NULL,
    alert_id    uuid NOT NULL,
    at          timestamptz NOT NULL,
    change      text NOT NULL,
    actor       text,
    alert       jsonb NOT NULL
);
SELECT create_hypertable('alert_events', 'at', chunk_time_interval => INTERVAL '30 days');
CREATE INDEX alert_events_event_id ON alert_events (event_id);
CREATE INDEX alert_events_alert ON alert_events (alert_id, event_id);

-- Who read what about whom, and why (X-Access-Reason).
CREATE TABLE consultations (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    username    text NOT NULL,
    reason      text NOT NULL,
    subject_id  uuid,
    what        text NOT NULL,
    range_from  timestamptz,
    range_until timestamptz
);
CREATE INDEX consultations_subject ON consultations (subject_id, at);
