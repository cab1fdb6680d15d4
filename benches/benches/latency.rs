//! Round-trip latency of kernel-sim's `msg_send` against the machine's floors, client and server
//! on different CPUs. Run with `cargo bench -p benches`.
//!
//! The same executable is also the servers: started with `QSIM_BENCH_ROLE` set, `main` runs that
//! role instead of criterion.

use benches::floor::Handoff;
use benches::process::{Placement, Watchdog};
use benches::rtt::{FloorPeer, KernelPeer, RoundTrip};
use benches::summary::{load_average, ratio_table, Recorder};
use benches::BenchError;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use kernel_sim::ChannelWait;
use std::time::Duration;

const SAMPLE_SIZE: usize = 30;
const PAYLOAD: usize = 8;
/// The payload sizes of `rtt_payload_apart`, with their labels.
const PAYLOADS: [(usize, &str); 3] = [(256, "256B"), (4 * 1024, "4KiB"), (64 * 1024, "64KiB")];
/// `rtt_payload_apart` has nine cases, so each gets fewer samples and less time than the 8-byte
/// ones, to keep the whole bench within about three minutes.
const PAYLOAD_SAMPLE_SIZE: usize = 20;
const PAYLOAD_MEASUREMENT: Duration = Duration::from_secs(2);
/// A case (warm-up, samples, analysis) takes about 5 s; anything near this limit is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(60);

fn main() {
    if let Some(code) = benches::role::dispatch() {
        std::process::exit(code);
    }
    let placement = Placement::apart();
    let load = || load_average().unwrap_or_else(|| "unknown".to_owned());
    eprintln!("placement: {placement}; load average before: {}", load());
    let mut c = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let rows = rtt_8b_apart(&mut c, &placement);
    let sized = rtt_payload_apart(&mut c, &placement);
    c.final_summary();
    let measured = |rows: &[(String, Option<f64>)]| rows.iter().any(|r| r.1.is_some());
    if measured(&rows) || measured(&sized) {
        for (group, rows) in [("rtt_8B_apart", &rows), ("rtt_payload_apart", &sized)] {
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
    /// A case of `rtt_8B_apart`.
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
/// round trip.
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
    let mut peer = started.unwrap_or_else(|e| panic!("{name}: setup failed: {e}"));
    let (pids, files) = peer.resources();
    let watchdog = Watchdog::arm(format!("{group_name}/{name}"), CASE_LIMIT, pids, files);
    let mut rec = Recorder::new();
    group.bench_function(id, |b| {
        b.iter_custom(|iters| rec.record(iters, peer.time_round_trips(iters, payload)))
    });
    if let Err(e) = peer.stop() {
        eprintln!("{name}: {e}");
    }
    drop(watchdog);
    let median = rec.median_ns(samples);
    (name, median)
}

fn rtt_8b_apart(c: &mut Criterion, placement: &Placement) -> Vec<(String, Option<f64>)> {
    const GROUP: &str = "rtt_8B_apart";
    let mut g = c.benchmark_group(GROUP);
    // Each peer starts right before its case and is stopped right after it.
    let rows = vec![
        run_case(
            &mut g,
            GROUP,
            Case::eight_bytes("msg_send"),
            KernelPeer::start("adaptive", ChannelWait::System, placement),
        ),
        run_case(
            &mut g,
            GROUP,
            Case::eight_bytes("msg_send_blocking"),
            KernelPeer::start("blocking", ChannelWait::Blocking, placement),
        ),
        run_case(
            &mut g,
            GROUP,
            Case::eight_bytes("futex_floor"),
            FloorPeer::start(Handoff::Futex, placement),
        ),
        run_case(
            &mut g,
            GROUP,
            Case::eight_bytes("spin_floor"),
            FloorPeer::start(Handoff::Spin, placement),
        ),
    ];
    g.finish();
    rows
}

/// Round trips of larger payloads: the adaptive `msg_send` and the two floors at each size in
/// [`PAYLOADS`], size by size, with one peer per case as in `rtt_8B_apart`.
fn rtt_payload_apart(c: &mut Criterion, placement: &Placement) -> Vec<(String, Option<f64>)> {
    const GROUP: &str = "rtt_payload_apart";
    let mut g = c.benchmark_group(GROUP);
    g.sample_size(PAYLOAD_SAMPLE_SIZE)
        .measurement_time(PAYLOAD_MEASUREMENT);
    let mut rows = Vec::new();
    for (len, label) in PAYLOADS {
        rows.push(run_case(
            &mut g,
            GROUP,
            Case::sized("msg_send", len, label),
            KernelPeer::start("adaptive", ChannelWait::System, placement),
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
