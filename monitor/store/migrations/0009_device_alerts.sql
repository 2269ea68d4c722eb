-- A device's open alert of a kind (tamper, battery, comms loss, spoofing, ...) is looked
-- up for every device condition. Without an index that is a scan of every unresolved
-- alert: with a silent fleet of 100,000 devices, one scan per device.
CREATE INDEX alerts_device_open ON alerts (device_id, kind)
    WHERE state <> 'resolved' AND cleared_at IS NULL;
