//! Latency-aware load balancing tower layer: power of two choices over peak-EWMA.
