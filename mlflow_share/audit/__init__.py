"""The tamper-evident audit log: one hash-chained, append-only table in MLflow's database."""
