//! Priority admission tower layer: highest priority admitted first, lowest shed first.
