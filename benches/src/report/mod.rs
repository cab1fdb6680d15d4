//! The report: every latency case, floor and peer of issue 7 (and the throughput, HA and recovery
//! rows) without criterion's long sampling, repeated a few times, interleaved repeat by repeat so
//! drift favours no case. Each repeat of a case starts its own peers (setup outside the timing),
//! warms up, then times each round trip on its own ([`Sampled`]); a row's median is the median of
//! its per-repeat medians, its p99 is over all its samples.
//!
//! The guaranteed-delivery rows ([`CaseKind::Gmd`]: `gmd_memory`, `gmd_file_batch64`,
//! `gmd_file_each`, 8 B, `apart`) give nanoseconds per message of a stream delivered through
//! ha-lib's `GmdConn` ([`crate::gmd`]), one sample per stream; they are informative (no target)
//! and compared with the `msg_send` 8 B `apart` row of the same run ([`GMD_REFERENCE`]).
//!
//! Most cases give one row. Two give several, from the same runs: the HA pair ([`CaseKind::HaPair`]:
//! `ha_msg_send` and the `msg_send_paired` it is timed against, run by run) and the recovery
//! cycles ([`CaseKind::Recovery`]: `recovery_detect`, `restart`, `recovery_total`).
//!
//! Rendering (table, JSON, SVG) is in [`render`], the issue's targets in [`targets`].

pub mod idle;
pub mod render;
pub mod targets;

use crate::error::BenchError;
use crate::floor::os::PairKind;
use crate::floor::Handoff;
use crate::gmd::{GmdArea, GmdPeer, GMD_PAYLOAD};
use crate::ha::{recovery_cycle, HaPeer, HA_PAYLOAD};
use crate::iox::IceoryxPeer;
use crate::peers::{self, StreamPeer};
use crate::process::{Placement, PlacementKind, Watchdog};
use crate::rtt::{FloorPeer, KernelCase, KernelPeer, RoundTrip, Sampled};
use crate::throughput::{ThroughputCase, ThroughputRig};
use kernel_sim::ChannelWait;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The payload sizes of the latency cases.
pub const PAYLOADS: [usize; 6] = [0, 8, 256, 4096, 64 * 1024, 1024 * 1024];
/// The payload sizes of `msg_sendv` (4 parts each way).
pub const SENDV_PAYLOADS: [usize; 2] = [8, 64 * 1024];
/// Gather and scatter parts of `msg_sendv`.
pub const SENDV_PARTS: usize = 4;
/// Payload of the throughput rows.
pub const THROUGHPUT_PAYLOAD: usize = 8;
/// Server work per request of the throughput rows.
pub const THROUGHPUT_WORK: Duration = Duration::from_micros(20);
/// Anything near this per case and repeat is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(60);
/// Runs of each side of the HA pair per repeat, alternating (A, B, A, B, ...).
pub const HA_PAIR_RUNS: u32 = 10;
/// The rows of the HA pair.
pub const HA_ROWS: [&str; 2] = ["ha_msg_send", "msg_send_paired"];
/// The rows of the recovery cycles.
pub const RECOVERY_ROWS: [&str; 3] = ["recovery_detect", "restart", "recovery_total"];
/// The row the guaranteed-delivery rows are compared with (same payload and placement, same
/// run): a plain round trip per message.
pub const GMD_REFERENCE: &str = "msg_send";

/// What a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// `msg_send` or `msg_sendv` to a kernel-sim server.
    Kernel(KernelCase),
    /// A floor.
    Floor(Handoff),
    /// A pipe pair or a Unix socket pair.
    Stream(PairKind),
    /// iceoryx2 request-response, polling.
    Iceoryx,
    /// `memcpy` of the payload in this process.
    Memcpy,
    /// Clients and receivers against one server.
    Throughput(ThroughputCase),
    /// `ha_msg_send` on an HA-attached coid, recovered once before timing, and `msg_send` to an
    /// unnamed server with no HA library, timed in alternating runs: rows [`HA_ROWS`].
    HaPair,
    /// Kill-and-restart cycles of a server an HA client is blocked on: rows [`RECOVERY_ROWS`].
    Recovery,
    /// Streams of one-way messages through a guaranteed-delivery connection with this area,
    /// ns per message (informative).
    Gmd(GmdArea),
}

impl CaseKind {
    /// The rows this kind of case gives; `None`: one row, named as the case.
    pub fn rows(self) -> Option<&'static [&'static str]> {
        match self {
            CaseKind::HaPair => Some(&HA_ROWS),
            CaseKind::Recovery => Some(&RECOVERY_ROWS),
            _ => None,
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The row's name (the issue's).
    pub name: String,
    /// Payload bytes (0 where it does not apply).
    pub payload: usize,
    /// Where it runs.
    pub placement: PlacementKind,
    /// What runs.
    pub kind: CaseKind,
}

/// How long each part of a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Repeats of every case.
    pub repeats: usize,
    /// Untimed round trips before each repeat's samples.
    pub warm_up: Duration,
    /// Sampling time of a latency case, per repeat.
    pub budget: Duration,
    /// At most this many samples per case and repeat.
    pub max_samples: usize,
    /// Throughput: running time before the first window.
    pub throughput_warm_up: Duration,
    /// Throughput: sampling time per repeat.
    pub throughput_budget: Duration,
    /// Throughput: one sample per window.
    pub window: Duration,
    /// Recovery: kill-and-restart cycles per repeat.
    pub recovery_cycles: usize,
    /// Recovery: how long after the kill the new server is started (zero: at once, the issue's
    /// method).
    pub restart_delay: Duration,
    /// Guaranteed delivery: messages per timed stream (one sample each).
    pub gmd_messages: u64,
    /// Guaranteed delivery: timed streams per repeat (after one untimed stream of a quarter).
    pub gmd_streams: usize,
}

impl Timing {
    /// The default run: about two minutes on two cores.
    pub fn full() -> Self {
        Timing {
            repeats: 3,
            warm_up: Duration::from_millis(30),
            budget: Duration::from_millis(200),
            max_samples: 300_000,
            throughput_warm_up: Duration::from_millis(100),
            throughput_budget: Duration::from_millis(300),
            window: Duration::from_millis(10),
            recovery_cycles: 15,
            restart_delay: Duration::ZERO,
            gmd_messages: 1000,
            gmd_streams: 5,
        }
    }

    /// `--quick`: one repeat, short samples.
    pub fn quick() -> Self {
        Timing {
            repeats: 1,
            warm_up: Duration::from_millis(10),
            budget: Duration::from_millis(50),
            max_samples: 100_000,
            throughput_warm_up: Duration::from_millis(50),
            throughput_budget: Duration::from_millis(100),
            window: Duration::from_millis(10),
            recovery_cycles: 3,
            restart_delay: Duration::ZERO,
            gmd_messages: 500,
            gmd_streams: 3,
        }
    }
}

/// The peers' 8-byte-and-up cases: `(name, kind)`.
fn stream_kinds() -> [(&'static str, PairKind); 3] {
    [
        PairKind::Pipe,
        PairKind::UnixStream,
        PairKind::UnixSeqpacket,
    ]
    .map(|k| (peers::kind_name(k), k))
}

/// Every case of the issue this crate can run, and the combinations it cannot run with the
/// reason. The order is the run order within a repeat.
pub fn all_cases() -> (Vec<Case>, Vec<(Case, String)>) {
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    let kernel = |wait, payload, parts| {
        CaseKind::Kernel(KernelCase {
            wait,
            max_payload: payload,
            parts,
        })
    };
    for placement in [PlacementKind::Apart, PlacementKind::Same] {
        let mut add = |name: &str, payload: usize, kind: CaseKind| {
            cases.push(Case {
                name: name.to_owned(),
                payload,
                placement,
                kind,
            })
        };
        for payload in PAYLOADS {
            add("msg_send", payload, kernel(ChannelWait::System, payload, 1));
            add(
                "msg_send_blocking",
                payload,
                kernel(ChannelWait::Blocking, payload, 1),
            );
            if SENDV_PAYLOADS.contains(&payload) {
                add(
                    "msg_sendv",
                    payload,
                    kernel(ChannelWait::System, payload, SENDV_PARTS),
                );
            }
            // The never-sleeping cases run apart only: two spinners on one core hand over only
            // at scheduler ticks.
            if placement == PlacementKind::Apart {
                add("spin_floor", payload, CaseKind::Floor(Handoff::Spin));
            }
            add("futex_floor", payload, CaseKind::Floor(Handoff::Futex));
            for (name, kind) in stream_kinds() {
                match peers::unsupported(kind, payload) {
                    Some(why) => skipped.push((
                        Case {
                            name: name.to_owned(),
                            payload,
                            placement,
                            kind: CaseKind::Stream(kind),
                        },
                        why.to_owned(),
                    )),
                    None => add(name, payload, CaseKind::Stream(kind)),
                }
            }
            if placement == PlacementKind::Apart {
                add("iceoryx2", payload, CaseKind::Iceoryx);
            }
            if payload == HA_PAYLOAD {
                add("ha_msg_send", payload, CaseKind::HaPair);
            }
            // Informative, and compared with `msg_send` 8 B `apart` only.
            if payload == GMD_PAYLOAD && placement == PlacementKind::Apart {
                for area in GmdArea::ALL {
                    add(area.row(), payload, CaseKind::Gmd(area));
                }
            }
        }
    }
    cases.push(Case {
        name: "recovery".to_owned(),
        payload: HA_PAYLOAD,
        placement: PlacementKind::None,
        kind: CaseKind::Recovery,
    });
    for payload in PAYLOADS {
        cases.push(Case {
            name: "memcpy".to_owned(),
            payload,
            placement: PlacementKind::None,
            kind: CaseKind::Memcpy,
        });
    }
    for wait in [ChannelWait::System, ChannelWait::Blocking] {
        for receivers in [1, 2] {
            for clients in [1, 2, 4] {
                let t = ThroughputCase {
                    wait,
                    clients,
                    receivers,
                    work: THROUGHPUT_WORK,
                    payload: THROUGHPUT_PAYLOAD,
                };
                cases.push(Case {
                    name: t.name(),
                    payload: THROUGHPUT_PAYLOAD,
                    placement: PlacementKind::None,
                    kind: CaseKind::Throughput(t),
                });
            }
        }
    }
    (cases, skipped)
}

/// The names of the rows `case` gives: its own name, or those of [`CaseKind::rows`].
pub fn row_names(case: &Case) -> Vec<String> {
    match case.kind.rows() {
        Some(rows) => rows.iter().map(|r| (*r).to_owned()).collect(),
        None => vec![case.name.clone()],
    }
}

/// Whether `case` is selected by `patterns`: its name or one of its rows' names.
pub fn case_selected(case: &Case, patterns: &[String]) -> bool {
    selected(&case.name, patterns) || row_names(case).iter().any(|n| selected(n, patterns))
}

/// Whether `name` is selected by `patterns` (exact names, or prefixes ending in `*`); no
/// patterns select everything.
pub fn selected(name: &str, patterns: &[String]) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
}

/// What a case measured over all repeats.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The median of each repeat.
    pub repeat_medians: Vec<f64>,
    /// Every sample, in nanoseconds.
    pub samples: Vec<f64>,
}

/// A finished row.
#[derive(Debug, Clone)]
pub struct Row {
    /// The case.
    pub case: Case,
    /// Median of the per-repeat medians, ns.
    pub median_ns: f64,
    /// 99th percentile of all samples, ns.
    pub p99_ns: f64,
    /// Samples over all repeats.
    pub samples: usize,
    /// The floor this row is compared with and that floor's median, if the issue names one.
    pub floor: Option<(&'static str, f64)>,
}

/// The `q`-quantile (nearest rank) of `sorted`, which must not be empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `v` (the mean of the middle two for an even count); `None` if empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    })
}

/// The floor the issue compares row `case` with: `futex_floor` for blocking cases, pipes and
/// sockets; `spin_floor` for adaptive cases and iceoryx2 `apart`; `futex_floor` for adaptive
/// cases `same`; a floor with itself; none for `memcpy`, throughput and recovery. `ha_msg_send`
/// is compared with `msg_send_paired`, the `msg_send` runs interleaved with it (the issue's
/// ratio); `msg_send_paired` with its floor, as `msg_send`. The guaranteed-delivery rows are
/// compared with `msg_send` ([`GMD_REFERENCE`]).
pub fn floor_of(case: &Case) -> Option<&'static str> {
    match case.kind {
        CaseKind::Gmd(_) => Some(GMD_REFERENCE),
        CaseKind::HaPair if case.name == HA_ROWS[0] => Some(HA_ROWS[1]),
        CaseKind::HaPair => match case.placement {
            PlacementKind::Apart => Some("spin_floor"),
            _ => Some("futex_floor"),
        },
        CaseKind::Recovery => None,
        CaseKind::Kernel(k) => match (k.wait, case.placement) {
            (ChannelWait::Blocking, _) => Some("futex_floor"),
            (ChannelWait::System, PlacementKind::Apart) => Some("spin_floor"),
            (ChannelWait::System, _) => Some("futex_floor"),
        },
        CaseKind::Floor(Handoff::Spin) => Some("spin_floor"),
        CaseKind::Floor(Handoff::Futex) | CaseKind::Stream(_) => Some("futex_floor"),
        CaseKind::Iceoryx => Some("spin_floor"),
        CaseKind::Memcpy | CaseKind::Throughput(_) => None,
    }
}

/// Turns measurements into rows, each with its floor of the same payload and placement.
pub fn rows(measured: &[(Case, Measured)]) -> Vec<Row> {
    let summary: Vec<(&Case, f64, f64, usize)> = measured
        .iter()
        .filter_map(|(c, m)| {
            let med = median(&m.repeat_medians)?;
            let mut s = m.samples.clone();
            s.sort_by(f64::total_cmp);
            (!s.is_empty()).then(|| (c, med, quantile(&s, 0.99), s.len()))
        })
        .collect();
    let find = |name: &str, payload: usize, placement: PlacementKind| {
        summary
            .iter()
            .find(|r| r.0.name == name && r.0.payload == payload && r.0.placement == placement)
            .map(|r| r.1)
    };
    summary
        .iter()
        .map(|&(case, median_ns, p99_ns, samples)| Row {
            case: case.clone(),
            median_ns,
            p99_ns,
            samples,
            floor: floor_of(case).and_then(|f| Some((f, find(f, case.payload, case.placement)?))),
        })
        .collect()
}

/// Times `memcpy` of `len` bytes: each sample is a batch of copies (enough for about 2 µs, so
/// the clock's own cost stays small) divided by its size.
fn memcpy_samples(len: usize, t: &Timing, out: &mut Vec<f64>) {
    let src = vec![0x5Au8; len];
    let mut dst = vec![0u8; len];
    let mut batch = |k: u32| {
        let start = Instant::now();
        for _ in 0..k {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        start.elapsed()
    };
    let mut k = 1u32;
    while batch(k) < Duration::from_micros(2) && k < 1 << 20 {
        k *= 2;
    }
    let warm_end = Instant::now() + t.warm_up;
    while Instant::now() < warm_end {
        batch(k);
    }
    let end = Instant::now() + t.budget;
    let mut taken = 0;
    while taken < t.max_samples && Instant::now() < end {
        out.push(batch(k).as_nanos() as f64 / f64::from(k));
        taken += 1;
    }
}

/// Runs one repeat of `peer`: samples under a watchdog, then stops it.
fn sample_peer<P: RoundTrip>(
    what: &str,
    started: Result<P, BenchError>,
    len: usize,
    t: &Timing,
    out: &mut Vec<f64>,
) -> Result<(), BenchError> {
    let mut peer = started?;
    let (pids, files) = peer.resources();
    let watchdog = Watchdog::arm(what.to_owned(), CASE_LIMIT, pids, files);
    let sampled = peer.with_exchange(Sampled {
        len,
        warm_up: t.warm_up,
        budget: t.budget,
        max: t.max_samples,
        out,
    });
    let stopped = peer.stop();
    drop(watchdog);
    sampled?;
    stopped
}

/// What one repeat of a case gave.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Each row's samples, in nanoseconds, in the order of [`row_names`].
    pub rows: Vec<(String, Vec<f64>)>,
    /// What the run checked on the way (the HA pair's forced recovery), for the progress line.
    pub note: Option<String>,
}

/// One repeat of the HA pair: both peers started (the HA one recovered once), then
/// [`HA_PAIR_RUNS`] runs of each, alternating, each with its own short warm-up, so drift within
/// the repeat hits both alike.
fn ha_pair(what: &str, placement: &Placement, t: &Timing) -> Result<Outcome, BenchError> {
    let len = HA_PAYLOAD;
    let mut plain = KernelPeer::start(
        "ha-paired",
        KernelCase::send(ChannelWait::System, len),
        placement,
    )?;
    let mut ha = HaPeer::start("ha", placement)?;
    let forced = ha.forced_recovery();
    let (mut pids, mut files) = plain.resources();
    let (p2, f2) = ha.resources();
    pids.extend(p2);
    files.extend(f2);
    let watchdog = Watchdog::arm(what.to_owned(), CASE_LIMIT, pids, files);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let runs = HA_PAIR_RUNS;
    let mut sampled = Ok(0);
    for _ in 0..runs {
        for (peer, out) in [(0, &mut a), (1, &mut b)] {
            let driver = Sampled {
                len,
                warm_up: t.warm_up / runs,
                budget: t.budget / runs,
                max: (t.max_samples / runs as usize).max(1),
                out,
            };
            sampled = sampled.and_then(|_| {
                if peer == 0 {
                    plain.with_exchange(driver)
                } else {
                    ha.with_exchange(driver)
                }
            });
        }
    }
    let stopped = plain.stop().and(ha.stop());
    drop(watchdog);
    sampled?;
    stopped?;
    Ok(Outcome {
        rows: vec![(HA_ROWS[0].to_owned(), b), (HA_ROWS[1].to_owned(), a)],
        note: Some(format!(
            "coid HA-aware; forced recovery: {} recoveries, {} retransmissions, {} failures",
            forced.recoveries, forced.retransmissions, forced.failures
        )),
    })
}

/// `t.recovery_cycles` kill-and-restart cycles: one sample per cycle in each recovery row.
fn recovery_cycles(placement: &Placement, t: &Timing) -> Result<Outcome, BenchError> {
    let mut rows: Vec<(String, Vec<f64>)> = RECOVERY_ROWS
        .iter()
        .map(|r| ((*r).to_owned(), Vec::new()))
        .collect();
    for _ in 0..t.recovery_cycles.max(1) {
        let c = recovery_cycle(placement, t.restart_delay)?;
        for (row, v) in rows.iter_mut().zip([c.detect_ns, c.restart_ns, c.total_ns]) {
            row.1.push(v as f64);
        }
    }
    Ok(Outcome { rows, note: None })
}

/// One repeat of a guaranteed-delivery row: a `gmd-server` and a connection to it, then
/// `t.gmd_streams` timed streams of `t.gmd_messages` messages under a watchdog.
fn gmd_streams(
    what: &str,
    area: GmdArea,
    placement: &Placement,
    t: &Timing,
) -> Result<Outcome, BenchError> {
    let mut peer = GmdPeer::start(area, placement)?;
    let (pids, files) = peer.resources();
    let watchdog = Watchdog::arm(what.to_owned(), CASE_LIMIT, pids, files);
    let mut out = Vec::new();
    let measured = peer.measure(t.gmd_messages, t.gmd_streams, &mut out);
    let stopped = peer.stop();
    drop(watchdog);
    measured?;
    let d = stopped?;
    Ok(Outcome {
        rows: vec![(area.row().to_owned(), out)],
        note: Some(format!(
            "{} streams of {}; {} messages recorded once each, {} duplicates, {} attempts",
            t.gmd_streams.max(1),
            t.gmd_messages.max(1),
            d.server.new,
            d.server.duplicates,
            d.client.attempts
        )),
    })
}

/// Runs one repeat of `case` in `placement` (already applied to this thread); returns the
/// samples of each of its rows in nanoseconds.
///
/// # Errors
///
/// Setting up a peer failed, a round trip failed or was no echo, a peer did not stop cleanly, or
/// (HA rows) the coid was not recovered as it must be.
pub fn run_once(case: &Case, placement: &Placement, t: &Timing) -> Result<Outcome, BenchError> {
    let what = format!(
        "{} {} B {}",
        case.name,
        case.payload,
        case.placement.as_str()
    );
    let len = case.payload;
    let mut out = Vec::new();
    match case.kind {
        CaseKind::Kernel(k) => sample_peer(
            &what,
            KernelPeer::start(&case.name, k, placement),
            len,
            t,
            &mut out,
        )?,
        CaseKind::Floor(h) => sample_peer(&what, FloorPeer::start(h, placement), len, t, &mut out)?,
        CaseKind::Stream(kind) => sample_peer(
            &what,
            StreamPeer::start(kind, len, placement),
            len,
            t,
            &mut out,
        )?,
        CaseKind::Iceoryx => {
            sample_peer(&what, IceoryxPeer::start(len, placement), len, t, &mut out)?
        }
        CaseKind::Memcpy => memcpy_samples(len, t, &mut out),
        CaseKind::Throughput(tc) => {
            let mut rig = ThroughputRig::start(&tc, placement)?;
            let (pids, files) = rig.resources();
            let watchdog = Watchdog::arm(what, CASE_LIMIT, pids, files);
            out = rig.measure(t.throughput_warm_up, t.throughput_budget, t.window);
            let stopped = rig.stop();
            drop(watchdog);
            stopped?;
        }
        CaseKind::HaPair => return checked(ha_pair(&what, placement, t)?),
        CaseKind::Recovery => return checked(recovery_cycles(placement, t)?),
        CaseKind::Gmd(area) => return checked(gmd_streams(&what, area, placement, t)?),
    }
    checked(Outcome {
        rows: vec![(case.name.clone(), out)],
        note: None,
    })
}

/// `outcome`, unless a row has no samples.
fn checked(outcome: Outcome) -> Result<Outcome, BenchError> {
    match outcome.rows.iter().find(|r| r.1.is_empty()) {
        Some((name, _)) => Err(BenchError::Exchange(format!("no samples for {name}"))),
        None => Ok(outcome),
    }
}

/// A case that failed, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case.
    pub case: Case,
    /// The repeat (from 1) in which it failed.
    pub repeat: usize,
    /// The error.
    pub error: String,
}

/// What a repeat of a case showed, for the progress line: each row's median, and the note.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Each row's median in this repeat, ns.
    pub medians: Vec<(String, f64)>,
    /// What the run checked on the way, if anything.
    pub note: Option<String>,
}

/// Runs `cases` `t.repeats` times, repeat by repeat; `progress` hears about each case as it
/// ends. A case that fails once is dropped from the results, all its rows (a broken exchange is
/// never a number), and reported. Returns one entry per row, named as the row.
pub fn run(
    cases: &[Case],
    t: &Timing,
    mut progress: impl FnMut(usize, &Case, &Result<Progress, String>),
) -> (Vec<(Case, Measured)>, Vec<Failure>) {
    // (row, index of its case, what it measured)
    let mut measured: Vec<(Case, usize, Measured)> = cases
        .iter()
        .enumerate()
        .flat_map(|(k, c)| {
            row_names(c)
                .into_iter()
                .map(move |name| (Case { name, ..c.clone() }, k, Measured::default()))
        })
        .collect();
    let mut failures: Vec<Failure> = Vec::new();
    for repeat in 1..=t.repeats {
        for kind in [
            PlacementKind::Apart,
            PlacementKind::Same,
            PlacementKind::None,
        ] {
            if !cases.iter().any(|c| c.placement == kind) {
                continue;
            }
            let placement = Placement::of(kind);
            for (k, case) in cases
                .iter()
                .enumerate()
                .filter(|(_, c)| c.placement == kind)
            {
                if failures.iter().any(|f| f.case == *case) {
                    continue;
                }
                let result = run_once(case, &placement, t);
                let shown = match &result {
                    Ok(o) => Ok(Progress {
                        medians: o
                            .rows
                            .iter()
                            .map(|(n, v)| (n.clone(), median(v).unwrap_or(f64::NAN)))
                            .collect(),
                        note: o.note.clone(),
                    }),
                    Err(e) => Err(e.to_string()),
                };
                progress(repeat, case, &shown);
                match result {
                    Ok(o) => {
                        for (name, samples) in o.rows {
                            if let Some((_, _, m)) = measured
                                .iter_mut()
                                .find(|(r, src, _)| *src == k && r.name == name)
                            {
                                m.repeat_medians.push(median(&samples).unwrap_or(f64::NAN));
                                m.samples.extend(samples);
                            }
                        }
                    }
                    Err(e) => failures.push(Failure {
                        case: case.clone(),
                        repeat,
                        error: e.to_string(),
                    }),
                }
            }
        }
    }
    let rows = measured
        .into_iter()
        .filter(|(_, k, _)| !failures.iter().any(|f| f.case == cases[*k]))
        .map(|(row, _, m)| (row, m))
        .collect();
    (rows, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, payload: usize, placement: PlacementKind, kind: CaseKind) -> Case {
        Case {
            name: name.into(),
            payload,
            placement,
            kind,
        }
    }

    #[test]
    fn the_plan_has_every_case_of_the_issue_and_no_same_spinner() {
        let (cases, skipped) = all_cases();
        let has = |name: &str, payload: usize, p: PlacementKind| {
            cases
                .iter()
                .any(|c| c.name == name && c.payload == payload && c.placement == p)
        };
        for payload in PAYLOADS {
            for p in [PlacementKind::Apart, PlacementKind::Same] {
                assert!(has("msg_send", payload, p));
                assert!(has("msg_send_blocking", payload, p));
                assert!(has("futex_floor", payload, p));
            }
            assert!(has("spin_floor", payload, PlacementKind::Apart));
            assert!(!has("spin_floor", payload, PlacementKind::Same));
            assert!(has("iceoryx2", payload, PlacementKind::Apart));
            assert!(!has("iceoryx2", payload, PlacementKind::Same));
            assert!(has("memcpy", payload, PlacementKind::None));
        }
        assert!(has("pipe", 8, PlacementKind::Same));
        assert!(!has("pipe", 0, PlacementKind::Apart));
        assert!(skipped
            .iter()
            .any(|(c, _)| c.name == "uds_stream" && c.payload == 0));
        for p in [PlacementKind::Apart, PlacementKind::Same] {
            assert!(has("ha_msg_send", 8, p));
            assert!(!has("ha_msg_send", 0, p));
        }
        let recovery: Vec<&Case> = cases
            .iter()
            .filter(|c| c.kind == CaseKind::Recovery)
            .collect();
        assert_eq!(recovery.len(), 1);
        assert_eq!(recovery[0].placement, PlacementKind::None);
        assert_eq!(row_names(recovery[0]), RECOVERY_ROWS);
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(case_selected(recovery[0], &p(&["restart"])));
        assert!(case_selected(recovery[0], &p(&["recovery*"])));
        assert!(!case_selected(recovery[0], &p(&["msg_send"])));
        for area in GmdArea::ALL {
            assert!(has(area.row(), 8, PlacementKind::Apart));
            assert!(!has(area.row(), 8, PlacementKind::Same));
        }
        assert_eq!(
            cases.iter().filter(|c| c.name.starts_with("gmd_")).count(),
            3
        );
        assert!(case_selected(
            cases.iter().find(|c| c.name == "gmd_file_each").unwrap(),
            &p(&["gmd*"])
        ));
        assert!(has("throughput_blocking_c4_r2", 8, PlacementKind::None));
        assert!(has("throughput_adaptive_c1_r1", 8, PlacementKind::None));
        assert_eq!(
            cases
                .iter()
                .filter(|c| c.name.starts_with("throughput_"))
                .count(),
            12
        );
    }

    #[test]
    fn patterns_select_exact_names_or_prefixes() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selected("msg_send", &[]));
        assert!(selected("msg_send", &p(&["msg_send"])));
        assert!(!selected("msg_send_blocking", &p(&["msg_send"])));
        assert!(selected(
            "throughput_adaptive_c1_r1",
            &p(&["spin_floor", "throughput*"])
        ));
    }

    #[test]
    fn quantiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[5.0], 0.99), 5.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn each_row_is_compared_with_the_floor_the_issue_names() {
        let adaptive = CaseKind::Kernel(KernelCase::send(ChannelWait::System, 8));
        let blocking = CaseKind::Kernel(KernelCase::send(ChannelWait::Blocking, 8));
        let m = |v: f64| Measured {
            repeat_medians: vec![v],
            samples: vec![v],
        };
        let spin = CaseKind::Floor(Handoff::Spin);
        let futex = CaseKind::Floor(Handoff::Futex);
        let measured = vec![
            (
                case("msg_send", 8, PlacementKind::Apart, adaptive),
                m(150.0),
            ),
            (
                case("msg_send", 8, PlacementKind::Same, adaptive),
                m(3000.0),
            ),
            (
                case("msg_send_blocking", 8, PlacementKind::Apart, blocking),
                m(50_000.0),
            ),
            (case("spin_floor", 8, PlacementKind::Apart, spin), m(100.0)),
            (
                case("futex_floor", 8, PlacementKind::Apart, futex),
                m(40_000.0),
            ),
            (
                case("futex_floor", 8, PlacementKind::Same, futex),
                m(2000.0),
            ),
            (
                case("memcpy", 8, PlacementKind::None, CaseKind::Memcpy),
                m(2.0),
            ),
            (
                case(
                    "gmd_memory",
                    8,
                    PlacementKind::Apart,
                    CaseKind::Gmd(GmdArea::Memory),
                ),
                m(6000.0),
            ),
        ];
        let rows = rows(&measured);
        let floor = |name: &str, p: PlacementKind| {
            rows.iter()
                .find(|r| r.case.name == name && r.case.placement == p)
                .unwrap()
                .floor
        };
        assert_eq!(
            floor("msg_send", PlacementKind::Apart),
            Some(("spin_floor", 100.0))
        );
        assert_eq!(
            floor("msg_send", PlacementKind::Same),
            Some(("futex_floor", 2000.0))
        );
        assert_eq!(
            floor("msg_send_blocking", PlacementKind::Apart),
            Some(("futex_floor", 40_000.0))
        );
        assert_eq!(floor("memcpy", PlacementKind::None), None);
        // Guaranteed delivery: against the plain round trip of the same run, not a floor.
        assert_eq!(
            floor("gmd_memory", PlacementKind::Apart),
            Some(("msg_send", 150.0))
        );
    }
}
