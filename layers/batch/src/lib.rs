//! Request batching tower layer: single requests become one batch call.
