//! Circuit breaking tower layer: count and time windows, failure-rate and slow-call trips, half-open probes, per-key breakers.
