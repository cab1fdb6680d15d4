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
use criterion::{BenchmarkGroup, Criterion};
use kernel_sim::ChannelWait;
use std::time::Duration;

const SAMPLE_SIZE: usize = 30;
const PAYLOAD: usize = 8;
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
    c.final_summary();
    if rows.iter().any(|r| r.1.is_some()) {
        println!("\n{}", ratio_table("rtt_8B_apart", &rows));
        println!("load average after: {}", load());
    }
}

/// Runs one case on a peer that was just started: the setup is already done, so criterion times
/// only round trips; the peer is stopped afterwards. Returns the case's name and its median per
/// round trip.
fn run_case<P: RoundTrip>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &'static str,
    started: Result<P, BenchError>,
) -> (&'static str, Option<f64>) {
    let mut peer = started.unwrap_or_else(|e| panic!("{name}: setup failed: {e}"));
    let (pids, files) = peer.resources();
    let watchdog = Watchdog::arm(format!("rtt_8B_apart/{name}"), CASE_LIMIT, pids, files);
    let mut rec = Recorder::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| rec.record(iters, peer.time_round_trips(iters, PAYLOAD)))
    });
    if let Err(e) = peer.stop() {
        eprintln!("{name}: {e}");
    }
    drop(watchdog);
    (name, rec.median_ns(SAMPLE_SIZE))
}

fn rtt_8b_apart(c: &mut Criterion, placement: &Placement) -> Vec<(&'static str, Option<f64>)> {
    let mut g = c.benchmark_group("rtt_8B_apart");
    // Each peer starts right before its case and is stopped right after it.
    let rows = vec![
        run_case(
            &mut g,
            "msg_send",
            KernelPeer::start("adaptive", ChannelWait::System, placement),
        ),
        run_case(
            &mut g,
            "msg_send_blocking",
            KernelPeer::start("blocking", ChannelWait::Blocking, placement),
        ),
        run_case(
            &mut g,
            "futex_floor",
            FloorPeer::start(Handoff::Futex, placement),
        ),
        run_case(
            &mut g,
            "spin_floor",
            FloorPeer::start(Handoff::Spin, placement),
        ),
    ];
    g.finish();
    rows
}
