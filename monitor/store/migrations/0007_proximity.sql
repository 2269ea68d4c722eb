-- Mobile exclusion zones: the subject must stay at least distance_m from another enrolled
-- device (a victim's phone), judged whenever either side reports.
CREATE TABLE proximity_rules (
    id               uuid PRIMARY KEY,
    subject_id       uuid NOT NULL REFERENCES subjects (id),
    other_device_id  text NOT NULL REFERENCES devices (device_id),
    distance_m       double precision NOT NULL CHECK (distance_m > 0 AND distance_m <= 100000),
    valid_from       timestamptz NOT NULL,
    valid_until      timestamptz,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX proximity_rules_subject ON proximity_rules (subject_id);
CREATE INDEX proximity_rules_other ON proximity_rules (other_device_id);
