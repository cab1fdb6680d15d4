//! The example resource managers, each with its client side: [`devices`] (`/dev/null` and
//! `/dev/zero`), [`counter`] (`devctl`), [`files`] (per-open offsets, content that survives a
//! restart). The echo server, which uses the raw kernel calls instead of the framework, is
//! [`crate::echo`].

pub mod counter;
pub mod devices;
pub mod files;
