//! The example resource managers, each with its client side: [`devices`] (`/dev/null` and
//! `/dev/zero`), [`counter`] (`devctl`), [`files`] (per-open offsets, content that survives a
//! restart), [`ha_reader`], the HA client that reads on across a restart of the file server,
//! and the HA patterns: [`class_member`], [`pair`] and [`gmd`] (guaranteed delivery's server
//! and client). The echo server, which uses the raw kernel calls instead of the framework, is
//! [`crate::echo`].

pub mod class_member;
pub mod counter;
pub mod devices;
pub mod files;
pub mod gmd;
pub mod ha_echo;
pub mod ha_reader;
pub mod pair;

/// The `N` bytes at `at` of a request, for a little-endian field (`None` if the request is too
/// short): `le::<8>(msg, 8).map(u64::from_le_bytes)`.
pub(crate) fn le<const N: usize>(msg: &[u8], at: usize) -> Option<[u8; N]> {
    msg.get(at..at.checked_add(N)?)?.try_into().ok()
}
