//! Round-trip latency of kernel-sim's `msg_send` (and of `ha_msg_send`, the same on a coid
//! ha-lib has HA-attached and recovered once) against the machine's floors and the peers a user
//! would pick instead, with criterion. Run with `cargo bench -p benches`; the report binary
//! (`latency-report`) runs the same ping-pong code for every case of issue 7 in one table.
//!
//! The same executable is also the servers: started with `QSIM_BENCH_ROLE` set, `main` runs that
//! role instead of criterion.

use benches::floor::os::PairKind;
use benches::floor::Handoff;
use benches::ha::HaPeer;
use benches::iox::IceoryxPeer;
use benches::peers::{kind_name, StreamPeer};
use benches::process::{clean_up_on_termination_signal, remove_stale_files, Placement, Watchdog};
use benches::report::SENDV_PARTS;
use benches::rtt::{FloorPeer, KernelCase, KernelPeer, RoundTrip};
use benches::summary::{load_average, ratio_table, Recorder};
use benches::BenchError;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use kernel_sim::ChannelWait;
use std::time::Duration;

const SAMPLE_SIZE: usize = 30;
const MEASUREMENT: Duration = Duration::from_secs(2);
const PAYLOAD: usize = 8;
/// The payload sizes of `rtt_payload_apart`, with their labels.
const PAYLOADS: [(usize, &str); 5] = [
    (0, "0B"),
    (256, "256B"),
    (4 * 1024, "4KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];
/// `rtt_payload_apart` has fifteen cases, so each gets fewer samples than the 8-byte ones, to
/// keep the whole bench within about three minutes.
const PAYLOAD_SAMPLE_SIZE: usize = 20;
/// A case (warm-up, samples, analysis) takes about 4 s; anything near this limit is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(60);

type Rows = Vec<(String, Option<f64>)>;

fn main() {
    if let Some(code) = benches::role::dispatch() {
        std::process::exit(code);
    }
    clean_up_on_termination_signal();
    let stale = remove_stale_files();
    if !stale.is_empty() {
        eprintln!("removed files of earlier runs that were killed: {stale:?}");
    }
    let load = || load_average().unwrap_or_else(|| "unknown".to_owned());
    eprintln!("load average before: {}", load());
    let mut c = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(MEASUREMENT)
        .configure_from_args();
    let apart = Placement::apart();
    eprintln!("apart: {apart}");
    let rows_apart = rtt_8b(&mut c, "rtt_8B_apart", &apart);
    let sized = rtt_payload_apart(&mut c, &apart);
    let same = Placement::same();
    eprintln!("same: {same}");
    let rows_same = rtt_8b(&mut c, "rtt_8B_same", &same);
    c.final_summary();
    let groups = [
        ("rtt_8B_apart", &rows_apart),
        ("rtt_payload_apart", &sized),
        ("rtt_8B_same", &rows_same),
    ];
    if groups
        .iter()
        .any(|(_, rows)| rows.iter().any(|r| r.1.is_some()))
    {
        for (group, rows) in groups {
            let rows: Vec<(&str, Option<f64>)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
            println!("\n{}", ratio_table(group, &rows));
        }
        println!("load average after: {}", load());
    }
}

/// One case of a group: criterion's id, the name in the ratio table, the payload length and the
/// group's sample size.
struct Case {
    id: BenchmarkId,
    name: String,
    payload: usize,
    samples: usize,
}

impl Case {
    /// An 8-byte case.
    fn eight_bytes(name: &str) -> Self {
        Case {
            id: BenchmarkId::from_parameter(name),
            name: name.to_owned(),
            payload: PAYLOAD,
            samples: SAMPLE_SIZE,
        }
    }

    /// A case of `rtt_payload_apart`, named `<case>/<size>`.
    fn sized(case: &str, payload: usize, label: &str) -> Self {
        Case {
            id: BenchmarkId::new(case, label),
            name: format!("{case}/{label}"),
            payload,
            samples: PAYLOAD_SAMPLE_SIZE,
        }
    }
}

/// Runs one case on a peer that was just started: the setup is already done, so criterion times
/// only round trips; the peer is stopped afterwards. Returns the case's name and its median per
/// round trip; none if the setup or a round trip failed (said on stderr).
fn run_case<P: RoundTrip>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    case: Case,
    started: Result<P, BenchError>,
) -> (String, Option<f64>) {
    let Case {
        id,
        name,
        payload,
        samples,
    } = case;
    let mut peer = match started {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{group_name}/{name}: setup failed: {e}");
            return (name, None);
        }
    };
    let (pids, files) = peer.resources();
    let watchdog = Watchdog::arm(format!("{group_name}/{name}"), CASE_LIMIT, pids, files);
    let mut rec = Recorder::new();
    let mut failed: Option<BenchError> = None;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            if failed.is_none() {
                match peer.time_round_trips(iters, payload) {
                    Ok(d) => return rec.record(iters, d),
                    Err(e) => failed = Some(e),
                }
            }
            // A broken exchange is never a number: let criterion finish at once, and drop the
            // case's median below.
            Duration::from_nanos(iters)
        })
    });
    if let Err(e) = peer.stop() {
        eprintln!("{group_name}/{name}: {e}");
    }
    drop(watchdog);
    if let Some(e) = failed {
        eprintln!("{group_name}/{name}: {e}");
        return (name, None);
    }
    let median = rec.median_ns(samples);
    (name, median)
}

fn kernel(wait: ChannelWait, payload: usize, parts: usize) -> KernelCase {
    KernelCase {
        wait,
        max_payload: payload,
        parts,
    }
}

/// The 8-byte group in `placement`: kernel-sim, the floors and the peers. The never-sleeping
/// cases (`spin_floor`, `iceoryx2`) run apart only.
fn rtt_8b(c: &mut Criterion, group_name: &str, placement: &Placement) -> Rows {
    let mut g = c.benchmark_group(group_name);
    let apart = placement.server_cpu.is_some() && placement.server_cpu != placement.client_cpu;
    let mut rows = vec![
        run_case(
            &mut g,
            group_name,
            Case::eight_bytes("msg_send"),
            KernelPeer::start(
                "adaptive",
                kernel(ChannelWait::System, PAYLOAD, 1),
                placement,
            ),
        ),
        // On a coid ha-lib has HA-attached and recovered once (setup, outside the timing). The
        // report times it interleaved with msg_send; here it simply follows it.
        run_case(
            &mut g,
            group_name,
            Case::eight_bytes("ha_msg_send"),
            HaPeer::start("ha", placement),
        ),
        run_case(
            &mut g,
            group_name,
            Case::eight_bytes("msg_send_blocking"),
            KernelPeer::start(
                "blocking",
                kernel(ChannelWait::Blocking, PAYLOAD, 1),
                placement,
            ),
        ),
        run_case(
            &mut g,
            group_name,
            Case::eight_bytes("msg_sendv"),
            KernelPeer::start(
                "sendv",
                kernel(ChannelWait::System, PAYLOAD, SENDV_PARTS),
                placement,
            ),
        ),
        run_case(
            &mut g,
            group_name,
            Case::eight_bytes("futex_floor"),
            FloorPeer::start(Handoff::Futex, placement),
        ),
    ];
    if apart {
        rows.push(run_case(
            &mut g,
            group_name,
            Case::eight_bytes("spin_floor"),
            FloorPeer::start(Handoff::Spin, placement),
        ));
    }
    for kind in [
        PairKind::Pipe,
        PairKind::UnixStream,
        PairKind::UnixSeqpacket,
    ] {
        rows.push(run_case(
            &mut g,
            group_name,
            Case::eight_bytes(kind_name(kind)),
            StreamPeer::start(kind, PAYLOAD, placement),
        ));
    }
    if apart {
        rows.push(run_case(
            &mut g,
            group_name,
            Case::eight_bytes("iceoryx2"),
            IceoryxPeer::start(PAYLOAD, placement),
        ));
    }
    g.finish();
    rows
}

/// Round trips of other payloads: the adaptive `msg_send` and the two floors at each size in
/// [`PAYLOADS`], size by size, with one peer per case as in `rtt_8B_apart`.
fn rtt_payload_apart(c: &mut Criterion, placement: &Placement) -> Rows {
    const GROUP: &str = "rtt_payload_apart";
    let mut g = c.benchmark_group(GROUP);
    g.sample_size(PAYLOAD_SAMPLE_SIZE);
    let mut rows = Vec::new();
    for (len, label) in PAYLOADS {
        rows.push(run_case(
            &mut g,
            GROUP,
            Case::sized("msg_send", len, label),
            KernelPeer::start("adaptive", kernel(ChannelWait::System, len, 1), placement),
        ));
        rows.push(run_case(
            &mut g,
            GROUP,
            Case::sized("futex_floor", len, label),
            FloorPeer::start(Handoff::Futex, placement),
        ));
        rows.push(run_case(
            &mut g,
            GROUP,
            Case::sized("spin_floor", len, label),
            FloorPeer::start(Handoff::Spin, placement),
        ));
    }
    g.finish();
    rows
}
