-- Planned suspensions (a court visit, a hospital stay): alerts raised for the subject in
-- the window are recorded but not pushed live.
CREATE TABLE suspensions (
    id          bigserial PRIMARY KEY,
    subject_id  uuid NOT NULL REFERENCES subjects (id),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL,
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    cancelled_by text,
    cancelled_at timestamptz,
    CHECK (ends_at > starts_at)
);
CREATE INDEX suspensions_subject ON suspensions (subject_id, starts_at);
