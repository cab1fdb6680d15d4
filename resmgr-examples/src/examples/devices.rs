//! `/dev/null` and `/dev/zero`: the smallest resource managers, one server for both.
//!
//! Everything but `open` and the zero device's `read` is the framework's default: reading
//! `/dev/null` gives end of file, writing either device swallows the data, `lseek` moves the
//! offset. (The paths live in the simulated system's path space, not the host's.)

use crate::journal::Journal;
use crate::resmgr::{Ctx, Dispatch, MountId, Ocb, OpenRequest, ResourceManager, Stats};
use kernel_sim::{Errno, System};

/// The null device's path.
pub const NULL_PATH: &str = "/dev/null";
/// The zero device's path.
pub const ZERO_PATH: &str = "/dev/zero";

/// Which device an open refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// Reads end of file, swallows writes.
    Null,
    /// Reads zeroes, swallows writes.
    Zero,
}

/// The two devices; `zero` is the mount id of `/dev/zero`.
pub struct Devices {
    zero: MountId,
}

impl ResourceManager for Devices {
    type Ocb = Device;

    fn open(&self, _ctx: &Ctx<'_>, req: &OpenRequest<'_>) -> Result<Device, Errno> {
        Ok(if req.mount == self.zero {
            Device::Zero
        } else {
            Device::Null
        })
    }

    fn read(
        &self,
        _ctx: &Ctx<'_>,
        ocb: &mut Ocb<Device>,
        nbytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        if ocb.ext == Device::Zero {
            out.resize(nbytes, 0);
        }
        Ok(())
    }
}

/// Attaches both devices and serves them on `threads` receiving threads until stopped.
/// `ready` runs once the paths are attached.
///
/// # Errors
///
/// The errno of the attach or of a failed receive.
pub fn serve(
    sys: &System,
    journal: Option<Journal>,
    threads: usize,
    ready: impl FnOnce(&Dispatch<'_, Devices>),
) -> Result<Stats, Errno> {
    // The mount ids are known before the attaches: null is attached first.
    let mut d = Dispatch::new(sys, Devices { zero: MountId(1) })?;
    if let Some(j) = journal {
        d = d.journal(j);
    }
    d.attach(NULL_PATH, 0)?;
    d.attach(ZERO_PATH, 0)?;
    ready(&d);
    d.run(threads)
}

/// What the devices client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicesReport {
    /// Bytes read from `/dev/zero`, and whether all were zero.
    pub zero_read: (usize, bool),
    /// Bytes `/dev/null` said it took.
    pub null_written: usize,
    /// Bytes read from `/dev/null` (0: end of file).
    pub null_read: usize,
}

/// Reads `n` bytes from `/dev/zero`, writes them to `/dev/null`, reads `/dev/null`.
///
/// # Errors
///
/// The errno of the first call that failed (`ENOENT` if the server is not there).
pub fn client(sys: &System, n: usize) -> Result<DevicesReport, Errno> {
    let zero = sys.open(ZERO_PATH, libc::O_RDONLY)?;
    let mut buf = vec![0xAAu8; n];
    let mut got = 0;
    while got < n {
        let k = sys.read(zero, &mut buf[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    sys.close(zero)?;
    let all_zero = buf[..got].iter().all(|&b| b == 0);
    let null = sys.open(NULL_PATH, libc::O_RDWR)?;
    let mut written = 0;
    while written < got {
        written += sys.write(null, &buf[written..got])?;
    }
    let null_read = sys.read(null, &mut buf)?;
    sys.close(null)?;
    Ok(DevicesReport {
        zero_read: (got, all_zero),
        null_written: written,
        null_read,
    })
}
