//! # resmgr-examples: example servers and clients for kernel-sim, and the `qsim` command line
//!
//! Design principles:
//!
//! 1. Examples are what a newcomer reads first: each does one thing, with QNX's names.
//! 2. Every example runs as its own process and finds its peer by name, as QNX programs do.
//! 3. Examples never panic on what a peer sends: a bad message gets an error reply.
//!
//! Module map: [`echo`] (the echo server and client), [`cli`] (their command-line front ends,
//! shared by the `echo-server` and `echo-client` binaries and `qsim run`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod echo;
pub mod examples;
pub mod journal;
pub mod resmgr;
