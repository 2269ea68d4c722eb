"""The TimescaleDB adapter: SQL, migrations, pooling and batched writes. No business rules."""
