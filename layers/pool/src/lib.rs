//! Adaptive concurrency limit tower layer (AIMD, Vegas, Gradient2), sharded for many cores.
