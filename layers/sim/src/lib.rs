//! Deterministic, seeded overload simulator for testing tollgate layers on paused tokio time.
