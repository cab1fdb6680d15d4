//! # resmgr-examples: example servers and clients for kernel-sim, and the `qsim` command line
//!
//! Design principles:
//!
//! 1. Examples are what a newcomer reads first: each does one thing, with QNX's names.
//! 2. Every example runs as its own process and finds its peer by name, as QNX programs do.
//! 3. Examples never panic on what a peer sends: a bad message gets an error reply.
//!
//! Module map:
//!
//! - [`resmgr`]: the resource-manager framework (dispatch loop, OCBs, iofunc-like defaults);
//!   [`journal`]: the servers' records of what they handled, written before each reply.
//! - [`examples`]: `/dev/null` and `/dev/zero`, the counter, the file server, the HA reader.
//! - [`ham`]: the HA manager (supervision, restarts, heartbeats, guardian).
//! - [`echo`]: the echo server and client, on the raw kernel calls.
//! - [`demo`]: `qsim demo`, the HA story in one command; [`chaos`]: `qsim chaos`, random kills
//!   and a report from the records.
//! - [`cli`]: the command-line front ends, shared by the `echo-server` and `echo-client`
//!   binaries and `qsim run <example>`.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod cli;
pub mod demo;
pub mod demo_gmd;
pub mod echo;
pub mod examples;
pub mod ham;
pub mod journal;
pub mod resmgr;
