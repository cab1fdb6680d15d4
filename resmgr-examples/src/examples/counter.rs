//! A counter device: `devctl` commands read, add to and reset it; `read` gives its value as
//! text, like a small `/proc` file.
//!
//! It shows `devctl`'s three directions: [`DCMD_COUNTER_GET`] returns data (`__DIOF`),
//! [`DCMD_COUNTER_ADD`] sends and returns data (`__DIOTF`), [`DCMD_COUNTER_RESET`] has none
//! (`__DION`). Every change is journaled with the value it left, before the reply, and a
//! restarted server takes its value back from the journal: a client that recovers finds the
//! count where its acknowledged requests left it.

use crate::journal::Journal;
use crate::resmgr::{Ctx, Dispatch, Ocb, OpenRequest, ResourceManager, Stats};
use kernel_sim::iomsg::dcmd::{self, CLASS_MISC};
use kernel_sim::{Coid, Errno, System};
use std::path::Path;
use std::sync::Mutex;

/// The counter's path.
pub const COUNTER_PATH: &str = "/dev/counter";

/// Returns the value (a little-endian `u64`).
pub const DCMD_COUNTER_GET: u32 = dcmd::diof(CLASS_MISC, 1, 8);
/// Sends `{u64 amount, u64 request id}`, returns `{u64 new value, u64 request id}`.
pub const DCMD_COUNTER_ADD: u32 = dcmd::diotf(CLASS_MISC, 2, 16);
/// Sets the value to 0.
pub const DCMD_COUNTER_RESET: u32 = dcmd::dion(CLASS_MISC, 3);

/// The counter.
pub struct Counter {
    value: Mutex<u64>,
}

impl Counter {
    /// A counter that starts where the journal at `path` left it (0 if there is none).
    pub fn restore(path: Option<&Path>) -> Counter {
        let value = path
            .and_then(|p| Journal::read(p).ok())
            .and_then(|records| {
                records
                    .iter()
                    .rev()
                    .filter(|r| r.op == "counter")
                    .find_map(|r| r.get("value")?.parse().ok())
            })
            .unwrap_or(0);
        Counter {
            value: Mutex::new(value),
        }
    }

    /// The current value.
    pub fn value(&self) -> u64 {
        *self.value.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl ResourceManager for Counter {
    type Ocb = ();

    fn open(&self, _ctx: &Ctx<'_>, req: &OpenRequest<'_>) -> Result<(), Errno> {
        if req.path.is_empty() {
            Ok(())
        } else {
            Err(Errno::NOENT)
        }
    }

    fn read(
        &self,
        _ctx: &Ctx<'_>,
        ocb: &mut Ocb<()>,
        nbytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let text = format!("{}\n", self.value());
        let from = (ocb.offset as usize).min(text.len());
        let to = (from + nbytes).min(text.len());
        out.extend_from_slice(&text.as_bytes()[from..to]);
        Ok(())
    }

    fn devctl(
        &self,
        ctx: &Ctx<'_>,
        ocb: &mut Ocb<()>,
        cmd: u32,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<i32, Errno> {
        let mut v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        match cmd {
            DCMD_COUNTER_GET => out.extend_from_slice(&v.to_le_bytes()),
            DCMD_COUNTER_ADD => {
                let (Some(amount), Some(id)) = (u64_at(data, 0), u64_at(data, 8)) else {
                    return Err(Errno::INVAL);
                };
                let new = v.wrapping_add(amount);
                ctx.record(
                    "counter",
                    &[
                        ("pid", &ctx.client().0),
                        ("op", &"add"),
                        ("id", &id),
                        ("amount", &amount),
                        ("value", &new),
                    ],
                )?;
                *v = new;
                out.extend_from_slice(&new.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
            }
            DCMD_COUNTER_RESET => {
                ctx.record(
                    "counter",
                    &[("pid", &ctx.client().0), ("op", &"reset"), ("value", &0)],
                )?;
                *v = 0;
            }
            other => {
                drop(v);
                return crate::resmgr::devctl_default(ocb, other, data, out);
            }
        }
        Ok(0)
    }
}

/// Serves the counter (restored from `journal`, which then records every change) on `threads`
/// receiving threads until stopped. `ready` runs once the path is attached.
///
/// # Errors
///
/// The errno of the attach or of a failed receive; `EIO` if the journal cannot be opened.
pub fn serve(
    sys: &System,
    journal: Option<&Path>,
    threads: usize,
    ready: impl FnOnce(&Dispatch<'_, Counter>),
) -> Result<Stats, Errno> {
    let mut d = Dispatch::new(sys, Counter::restore(journal))?;
    if let Some(p) = journal {
        d = d.journal(Journal::open(p).map_err(|_| Errno::IO)?);
    }
    d.attach(COUNTER_PATH, 0)?;
    ready(&d);
    d.run(threads)
}

/// `DCMD_COUNTER_GET` on an open counter.
///
/// # Errors
///
/// The errno of `devctl`.
pub fn get(sys: &System, fd: Coid) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    sys.devctl(fd, DCMD_COUNTER_GET, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// `DCMD_COUNTER_ADD`: adds `amount` as request `id`; returns the new value.
///
/// # Errors
///
/// The errno of `devctl`; `EIO` if the reply does not echo the request id.
pub fn add(sys: &System, fd: Coid, amount: u64, id: u64) -> Result<u64, Errno> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&amount.to_le_bytes());
    b[8..].copy_from_slice(&id.to_le_bytes());
    sys.devctl(fd, DCMD_COUNTER_ADD, &mut b)?;
    if u64_at(&b, 8) != Some(id) {
        return Err(Errno::IO);
    }
    u64_at(&b, 0).ok_or(Errno::IO)
}

/// `DCMD_COUNTER_RESET`.
///
/// # Errors
///
/// The errno of `devctl`.
pub fn reset(sys: &System, fd: Coid) -> Result<(), Errno> {
    sys.devctl(fd, DCMD_COUNTER_RESET, &mut []).map(|_| ())
}
