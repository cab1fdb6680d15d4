//! Loom models of the slot protocol (filled in below).
