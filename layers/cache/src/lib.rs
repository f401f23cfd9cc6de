//! Multi-level read-through caching tower layer: per-core L1, shared L2, optional Redis L3.
