-- Restraint orders (the measure a court or authority imposed), kept with their history,
-- and legal holds that exempt a subject's data from deletion.

CREATE TABLE orders (
    id           uuid NOT NULL,
    version      integer NOT NULL,
    subject_id   uuid NOT NULL REFERENCES subjects (id),
    authority    text NOT NULL,
    reference    text NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz,
    status       text CHECK (status IN ('red', 'yellow', 'blue', 'green')),
    home_lon     double precision,
    home_lat     double precision,
    radius_m     double precision,
    notes        text,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by  text NOT NULL,
    PRIMARY KEY (id, version),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);
CREATE INDEX orders_subject ON orders (subject_id, starts_at);

CREATE TABLE legal_holds (
    id           bigserial PRIMARY KEY,
    subject_id   uuid NOT NULL REFERENCES subjects (id),
    reason       text NOT NULL,
    set_by       text NOT NULL,
    set_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_by  text,
    released_at  timestamptz
);
CREATE INDEX legal_holds_subject ON legal_holds (subject_id) WHERE released_at IS NULL;

-- What each retention run did, for the record.
CREATE TABLE retention_runs (
    id               bigserial PRIMARY KEY,
    ran_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    as_of            timestamptz NOT NULL,
    retention_days   integer NOT NULL,
    expired_subjects uuid[] NOT NULL,
    chunks_dropped   integer NOT NULL,
    rows_deleted     bigint NOT NULL
);
