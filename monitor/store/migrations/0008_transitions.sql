-- Enter and exit events: when a subject surely entered or left each of its zones.
CREATE TABLE zone_transitions (
    subject_id  uuid NOT NULL REFERENCES subjects (id),
    rule_key    text NOT NULL,
    zone_id     uuid,
    t           timestamptz NOT NULL,
    entered     boolean NOT NULL,
    device_id   text NOT NULL,
    seq         bigint,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    PRIMARY KEY (subject_id, rule_key, t, entered)
);
