-- Commands sent to devices (protocol v1 `cmd`), tracked to their `cmd_result`.
CREATE TABLE device_commands (
    id              text PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (device_id),
    cmd             text NOT NULL CHECK (cmd IN ('locate', 'set_interval', 'vibrate')),
    args            jsonb,
    requested_by    text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    state           text NOT NULL DEFAULT 'sent'
                    CHECK (state IN ('sent', 'ok', 'failed', 'unanswered')),
    unanswered_at   timestamptz,
    answered_at     timestamptz,
    result          jsonb
);
CREATE INDEX device_commands_device ON device_commands (device_id, requested_at);
CREATE INDEX device_commands_waiting ON device_commands (requested_at) WHERE state = 'sent';
