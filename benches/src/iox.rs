//! The `iceoryx2` peer: iceoryx2's request-response messaging pattern between two processes,
//! both sides polling (never sleeping), as in iceoryx2's own benchmarks. Request and response are
//! `[u8]` slices of the payload's length: the client copies the payload into a loaned request,
//! the server copies the request into a loaned response, and the client copies the response out.
//!
//! Each peer gets a configuration of its own: a root directory
//! `/tmp/qsimtest-bench-<pid>-iox2-<n>` and a file prefix `qsimtest-bench-<pid>-iox2-<n>-` for
//! its shared memory, and a unique service name, so runs never meet and a guard can remove
//! whatever iceoryx2 left behind. iceoryx2 removes its nodes' and services' files when they are
//! dropped, but keeps, on purpose, the directories under its root and one management segment per
//! domain (`<prefix>node.<version>.global_mgmt`, the domain's node counter): the guard removes
//! those, and [`IceoryxPeer::stop`] fails if anything else was left.

use crate::error::BenchError;
use crate::floor::SHM_PREFIX;
use crate::process::{remove_path, PeerProcess, Placement};
use crate::role::{env_number, env_required, say_ready, Role};
use crate::rtt::{Driver, Exchange, RoundTrip, STOP_MESSAGE, STOP_TIMEOUT};
use iceoryx2::port::client::Client;
use iceoryx2::port::server::Server;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::request_response::PortFactory;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The service name.
pub const SERVICE_ENV: &str = "QSIM_BENCH_IOX_SERVICE";
/// The root directory (iceoryx2's `global.root-path`).
pub const ROOT_ENV: &str = "QSIM_BENCH_IOX_ROOT";
/// The shared-memory file prefix (iceoryx2's `global.prefix`).
pub const PREFIX_ENV: &str = "QSIM_BENCH_IOX_PREFIX";
/// The largest slice either side loans.
pub const SLICE_ENV: &str = "QSIM_BENCH_IOX_SLICE";
/// Largest payload of this peer: 64 MiB.
pub const MAX_LEN: usize = 64 << 20;

/// How long the first request may take to find the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Service = ipc::Service;
type RrClient = Client<Service, [u8], (), [u8], ()>;
type RrServer = Server<Service, [u8], (), [u8], ()>;
type RrFactory = PortFactory<Service, [u8], (), [u8], ()>;

fn iox<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::Iceoryx(format!("{what}: {e:?}"))
}

/// An iceoryx2 configuration rooted at `root` with shared-memory prefix `prefix`.
fn config(root: &str, prefix: &str) -> Result<Config, BenchError> {
    let mut config = Config::default();
    config.global.prefix = FileName::new(prefix.as_bytes()).map_err(iox("prefix"))?;
    config
        .global
        .set_root_path(&Path::new(root.as_bytes()).map_err(iox("root path"))?);
    Ok(config)
}

fn node(config: &Config) -> Result<Node<Service>, BenchError> {
    NodeBuilder::new()
        .config(config)
        // The bench's own signals stay the bench's.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Service>()
        .map_err(iox("node"))
}

/// The root directory and file prefix of one peer; dropping it removes whatever is left of
/// them.
#[derive(Debug)]
struct IoxFiles {
    root: PathBuf,
    prefix: String,
}

impl IoxFiles {
    fn new() -> Self {
        static NEXT: Mutex<u32> = Mutex::new(0);
        let n = {
            let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
            *next = next.wrapping_add(1);
            *next
        };
        let stem = format!("{SHM_PREFIX}{}-iox2-{n}", std::process::id());
        IoxFiles {
            root: std::env::temp_dir().join(&stem),
            prefix: format!("{stem}-"),
        }
    }

    /// This peer's shared-memory files and its root directory, as far as they exist.
    fn all(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&self.prefix))
            })
            .map(|e| e.path())
            .collect();
        if self.root.exists() {
            found.push(self.root.clone());
        }
        found
    }

    /// What iceoryx2 should have removed but did not: every file of the peer except the
    /// domain's management segment (`<prefix>...global_mgmt`, which iceoryx2 keeps on purpose:
    /// it holds the domain's node counter and is never owned by a node) and the directories it
    /// created under the root.
    fn leftovers(&self) -> Vec<PathBuf> {
        let mut left: Vec<PathBuf> = self
            .all()
            .into_iter()
            .filter(|p| p.starts_with("/dev/shm"))
            .filter(|p| !p.to_string_lossy().ends_with(".global_mgmt"))
            .collect();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(e.path()),
                    _ => left.push(e.path()),
                }
            }
        }
        left
    }
}

impl Drop for IoxFiles {
    fn drop(&mut self) {
        for p in self.all() {
            remove_path(&p);
        }
    }
}

/// An iceoryx2 request-response echo server in its own process, and this process's client.
pub struct IceoryxPeer {
    // Dropped in this order: our ports, service and node (iceoryx2 removes its files), the
    // server process, then the guard removes what is left.
    client: RrClient,
    service: RrFactory,
    node: Node<Service>,
    server: PeerProcess,
    files: IoxFiles,
}

impl IceoryxPeer {
    /// Creates a fresh configuration and service, starts an `iceoryx2-server` on it, and waits
    /// until a first request comes back.
    ///
    /// # Errors
    ///
    /// An iceoryx2 call failed, the server did not start, or did not answer within 5 s.
    pub fn start(len: usize, placement: &Placement) -> Result<Self, BenchError> {
        if len > MAX_LEN {
            return Err(BenchError::Config(format!("{len} bytes: above 64 MiB")));
        }
        let files = IoxFiles::new();
        let root = files
            .root
            .to_str()
            .ok_or_else(|| BenchError::Config("temp dir is not UTF-8".into()))?
            .to_owned();
        let config = config(&root, &files.prefix)?;
        let node = node(&config)?;
        let name = format!("qsim-bench/{}/{}", std::process::id(), files.prefix);
        let slice = len.max(STOP_MESSAGE.len());
        let service = node
            .service_builder(&ServiceName::new(&name).map_err(iox("service name"))?)
            .request_response::<[u8], [u8]>()
            .max_clients(1)
            .max_servers(1)
            .create()
            .map_err(iox("create service"))?;
        let client = service
            .client_builder()
            .initial_max_slice_len(slice)
            .create()
            .map_err(iox("create client"))?;
        let (server, _) = PeerProcess::spawn(
            Role::IceoryxServer,
            &[
                (SERVICE_ENV, name),
                (ROOT_ENV, root),
                (PREFIX_ENV, files.prefix.clone()),
                (SLICE_ENV, slice.to_string()),
            ],
            placement,
        )?;
        let mut peer = IceoryxPeer {
            client,
            service,
            node,
            server,
            files,
        };
        peer.first_round_trip(len)?;
        Ok(peer)
    }

    /// Sends until a request reaches the server (one sent before the client saw the server's
    /// port goes nowhere), and waits for the echo.
    fn first_round_trip(&mut self, len: usize) -> Result<(), BenchError> {
        let msg = vec![0x5Au8; len];
        let mut reply = vec![0u8; len];
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while Instant::now() < deadline {
            match exchange(&self.client, &msg, &mut reply, Some(deadline)) {
                Ok(n) if n == len && reply == msg => return Ok(()),
                Ok(n) => {
                    return Err(BenchError::Exchange(format!(
                        "first reply of {n} bytes is no echo"
                    )))
                }
                Err(NotYet) => std::thread::sleep(Duration::from_millis(1)),
                Err(Broken(e)) => return Err(e),
            }
        }
        Err(BenchError::NotReady {
            role: Role::IceoryxServer.as_str(),
            detail: format!("no response within {CONNECT_TIMEOUT:?}"),
        })
    }
}

/// Why [`exchange`] returned without a response.
enum Missed {
    /// The request reached no server (yet).
    NotYet,
    /// An iceoryx2 error, or the deadline passed.
    Broken(BenchError),
}
use Missed::{Broken, NotYet};

/// One request and its response, polling; gives up at `deadline` if one is given.
#[inline]
fn exchange(
    client: &RrClient,
    msg: &[u8],
    reply: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, Missed> {
    let request = client
        .loan_slice_uninit(msg.len())
        .map_err(|e| Broken(iox("loan request")(e)))?
        .write_from_slice(msg);
    let pending = request.send().map_err(|e| Broken(iox("send request")(e)))?;
    if pending.number_of_server_connections() == 0 {
        return Err(NotYet);
    }
    let mut polls = 0u32;
    loop {
        if let Some(response) = pending
            .receive()
            .map_err(|e| Broken(iox("receive response")(e)))?
        {
            let payload = response.payload();
            let n = payload.len().min(reply.len());
            reply[..n].copy_from_slice(&payload[..n]);
            return Ok(payload.len());
        }
        polls = polls.wrapping_add(1);
        // Now and then, check that someone can still answer.
        if polls.is_multiple_of(1 << 16) {
            if !pending.is_connected() {
                return Err(Broken(BenchError::Exchange(
                    "the iceoryx2 server is gone".into(),
                )));
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Broken(BenchError::Exchange("no response in time".into())));
            }
        }
        std::hint::spin_loop();
    }
}

impl Exchange for RrClient {
    #[inline]
    fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
        match exchange(self, msg, reply, None) {
            Ok(n) => Ok(n),
            Err(NotYet) => Err(BenchError::Exchange(
                "the iceoryx2 request reached no server".into(),
            )),
            Err(Broken(e)) => Err(e),
        }
    }
}

impl RoundTrip for IceoryxPeer {
    fn with_exchange<D: Driver>(&mut self, driver: D) -> D::Output {
        driver.drive(&mut self.client)
    }

    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        (vec![self.server.pid()], vec![self.files.root.clone()])
    }

    fn stop(self) -> Result<(), BenchError> {
        let IceoryxPeer {
            client,
            service,
            node,
            server,
            files,
        } = self;
        let mut reply = vec![0u8; STOP_MESSAGE.len()];
        let sent = exchange(
            &client,
            STOP_MESSAGE,
            &mut reply,
            Some(Instant::now() + STOP_TIMEOUT),
        );
        drop(client);
        drop(service);
        drop(node);
        let exited = server.wait_exit(STOP_TIMEOUT);
        let left = files.leftovers();
        drop(files);
        match sent {
            Ok(_) => {}
            Err(NotYet) => return Err(BenchError::Exchange("stop reached no server".into())),
            Err(Broken(e)) => return Err(e),
        }
        exited?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Iceoryx(format!(
                "left {left:?} behind (removed by the bench)"
            )))
        }
    }
}

/// The `iceoryx2-server` role: opens the service, prints `ready <pid>`, and echoes every request
/// (polling) until one equals [`STOP_MESSAGE`], which it answers before it exits.
pub(crate) fn serve_from_env() -> Result<(), BenchError> {
    let name = env_required(SERVICE_ENV)?;
    let root = env_required(ROOT_ENV)?;
    let prefix = env_required(PREFIX_ENV)?;
    let slice = env_number(SLICE_ENV, 0, 1..=MAX_LEN)?;
    let config = config(&root, &prefix)?;
    let node = node(&config)?;
    let service = node
        .service_builder(&ServiceName::new(&name).map_err(iox("service name"))?)
        .request_response::<[u8], [u8]>()
        .open()
        .map_err(iox("open service"))?;
    let server: RrServer = service
        .server_builder()
        .initial_max_slice_len(slice)
        .create()
        .map_err(iox("create server"))?;
    say_ready(format_args!("{}", std::process::id()))?;
    loop {
        let Some(request) = server.receive().map_err(iox("receive request"))? else {
            std::hint::spin_loop();
            continue;
        };
        let payload = request.payload();
        let stop = payload == STOP_MESSAGE;
        request
            .loan_slice_uninit(payload.len())
            .map_err(iox("loan response"))?
            .write_from_slice(payload)
            .send()
            .map_err(iox("send response"))?;
        if stop {
            // Let the client take the response before the port goes away.
            drop(request);
            std::thread::sleep(Duration::from_millis(10));
            return Ok(());
        }
    }
}
