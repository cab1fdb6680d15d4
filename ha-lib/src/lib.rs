//! # ha-lib: QNX's client-side HA library for kernel-sim
//!
//! Not built yet: recovery and retransmission on the same coid come with the ha-lib issues, on top
//! of kernel-sim's interposition point. This crate exists so the workspace has its final shape.
#![forbid(unsafe_code)]

pub use kernel_sim::{Coid, Errno};
