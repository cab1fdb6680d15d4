//! `latency-report`: every latency case, floor, peer and throughput row of issue 7 in one run,
//! side by side, without criterion's long sampling. See docs/benchmarks.md.
//!
//! ```text
//! cargo run --release -p benches --bin latency-report -- [--quick] [--json] [--cases ..]
//! ```
//!
//! The same executable is also every peer: started with `QSIM_BENCH_ROLE` set, `main` runs that
//! role instead.
#![forbid(unsafe_code)]

use benches::process::{
    clean_up_on_termination_signal, remove_own_shm_files, remove_stale_files, Placement,
    PlacementKind,
};
use benches::report::render::{self, payload_label, JsonExtras};
use benches::report::targets::{self, Verdict};
use benches::report::{self, case_selected, idle, Case, Timing};
use benches::summary::{format_ns, load_average};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Send latency against this machine's floors and peers, in one run (issue 7).
#[derive(Parser, Debug)]
#[command(name = "latency-report")]
struct Args {
    /// One repeat with short samples (well under 30 s).
    #[arg(long)]
    quick: bool,
    /// Print only one JSON object on stdout (the table and messages go to stderr).
    #[arg(long)]
    json: bool,
    /// Repeats of every case [default: 3, with --quick 1].
    #[arg(long)]
    repeats: Option<usize>,
    /// Sampling time per case and repeat, in milliseconds [default: 200, with --quick 50].
    #[arg(long)]
    time_ms: Option<u64>,
    /// Cases to run: names, or prefixes ending in `*`, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Recovery rows: start the new server this many microseconds after the kill [default: 0,
    /// at once].
    #[arg(long)]
    restart_delay_us: Option<u64>,
    /// Payload sizes in bytes, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    payloads: Vec<usize>,
    /// Placements (apart, same, none), comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    placements: Vec<String>,
    /// Where to write the SVG plot (default: `<target dir>/qsim-bench/latency.svg`).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Skip the check that an idle adaptive server and a waiting client sleep.
    #[arg(long)]
    no_idle: bool,
    /// Also print the table as Markdown (on stderr).
    #[arg(long)]
    markdown: bool,
    /// List the cases (and the skipped combinations) and exit.
    #[arg(long)]
    list: bool,
}

/// `<target dir>/qsim-bench/latency.svg`: `$CARGO_TARGET_DIR`, else the `target` directory
/// this executable lives in, else the temp dir.
fn default_svg_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir);
    target.join("qsim-bench").join("latency.svg")
}

/// The processes this one has not reaped (every peer should be gone by the end).
fn children() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_ascii_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let clock =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    format!(
        "{cpus} CPUs ({model}), clocksource {clock}, one clock read {:.0} ns",
        clock_read_ns()
    )
}

/// What one `Instant::now` costs here: every latency sample includes one.
fn clock_read_ns() -> f64 {
    const N: u32 = 100_000;
    let start = Instant::now();
    for _ in 0..N {
        std::hint::black_box(Instant::now());
    }
    start.elapsed().as_nanos() as f64 / f64::from(N)
}

fn main() {
    if let Some(code) = benches::role::dispatch() {
        std::process::exit(code);
    }
    clean_up_on_termination_signal();
    let args = Args::parse();
    let mut placements = Vec::new();
    for p in &args.placements {
        match PlacementKind::parse(p) {
            Some(k) => placements.push(k),
            None => {
                eprintln!("--placements: {p:?} is none of apart, same, none");
                std::process::exit(2);
            }
        }
    }
    let keep = |c: &Case| {
        case_selected(c, &args.cases)
            && (args.payloads.is_empty() || args.payloads.contains(&c.payload))
            && (placements.is_empty() || placements.contains(&c.placement))
    };
    let (all, skipped) = report::all_cases();
    let cases: Vec<Case> = all.into_iter().filter(|c| keep(c)).collect();
    let skipped: Vec<(Case, String)> = skipped.into_iter().filter(|(c, _)| keep(c)).collect();
    if args.list {
        for c in &cases {
            let rows = report::row_names(c);
            let rows = if rows == [c.name.clone()] {
                String::new()
            } else {
                format!(" (rows: {})", rows.join(", "))
            };
            println!(
                "{} {} {}{rows}",
                c.name,
                payload_label(c.payload),
                c.placement.as_str()
            );
        }
        for (c, why) in &skipped {
            println!(
                "{} {} {} (skipped: {why})",
                c.name,
                payload_label(c.payload),
                c.placement.as_str()
            );
        }
        return;
    }
    let mut timing = if args.quick {
        Timing::quick()
    } else {
        Timing::full()
    };
    if let Some(r) = args.repeats {
        timing.repeats = r.max(1);
    }
    if let Some(ms) = args.time_ms {
        timing.budget = Duration::from_millis(ms.max(1));
        timing.throughput_budget = Duration::from_millis(ms.max(1)).max(timing.window);
    }
    if let Some(us) = args.restart_delay_us {
        timing.restart_delay = Duration::from_micros(us);
    }
    let stale = remove_stale_files();
    if !stale.is_empty() {
        eprintln!("removed files of earlier runs that were killed: {stale:?}");
    }
    // Before any pinning, which would hide the other CPUs.
    let machine = machine();
    // Everything but the JSON goes to stderr with --json, the table to stdout without it.
    let load_before = load_average();
    eprintln!(
        "latency-report: {} cases x {} repeats; {}; load average before: {}",
        cases.len(),
        timing.repeats,
        machine,
        load_before.as_deref().unwrap_or("unknown")
    );
    for kind in [PlacementKind::Apart, PlacementKind::Same] {
        if cases.iter().any(|c| c.placement == kind) {
            eprintln!("placement {}: {}", kind.as_str(), Placement::of(kind));
        }
    }
    let started = Instant::now();
    let (measured, failures) = report::run(&cases, &timing, |repeat, case, result| {
        let what = format!(
            "[{repeat}/{}] {} {} {}",
            timing.repeats,
            case.name,
            payload_label(case.payload),
            case.placement.as_str()
        );
        match result {
            Ok(p) => {
                let medians: Vec<String> = match p.medians.as_slice() {
                    [(_, m)] => vec![format!("median {}", format_ns(*m))],
                    many => many
                        .iter()
                        .map(|(n, m)| format!("{n} median {}", format_ns(*m)))
                        .collect(),
                };
                let note = p
                    .note
                    .as_deref()
                    .map_or(String::new(), |n| format!(" ({n})"));
                eprintln!("{what}: {}{note}", medians.join(", "));
            }
            Err(e) => eprintln!("{what}: FAILED: {e}"),
        }
    });
    let idle = if args.no_idle || !args.cases.is_empty() {
        None
    } else {
        match idle::measure(Duration::from_secs(1), &Placement::apart()) {
            Ok(i) => Some(i),
            Err(e) => {
                eprintln!("idle check failed: {e}");
                None
            }
        }
    };
    let elapsed = started.elapsed();
    let load_after = load_average();
    let rows = report::rows(&measured);
    let targets = targets::evaluate(&rows, idle.as_ref());
    let title = format!(
        "qsim round trips: median vs payload ({machine}, load {})",
        load_after.as_deref().unwrap_or("?")
    );
    let svg_path = args.svg.clone().unwrap_or_else(default_svg_path);
    let svg_written = svg_path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&svg_path, render::svg(&rows, &title)));
    let table = render::table(&rows);
    if args.json {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    for (c, why) in &skipped {
        eprintln!(
            "skipped: {} {} {}: {why}",
            c.name,
            payload_label(c.payload),
            c.placement.as_str()
        );
    }
    for f in &failures {
        eprintln!(
            "FAILED: {} {} {} (repeat {}): {}",
            f.case.name,
            payload_label(f.case.payload),
            f.case.placement.as_str(),
            f.repeat,
            f.error
        );
    }
    eprintln!("\ntargets (issue 7):");
    for t in &targets {
        eprintln!("  [{}] {}: {}", t.verdict.as_str(), t.claim, t.detail);
    }
    if args.markdown {
        eprintln!("\n{}", render::markdown(&rows));
    }
    let svg_shown = match &svg_written {
        Ok(()) => {
            eprintln!("plot written to {}", svg_path.display());
            Some(svg_path.display().to_string())
        }
        Err(e) => {
            eprintln!("could not write the plot to {}: {e}", svg_path.display());
            None
        }
    };
    eprintln!(
        "took {:.1} s; load average after: {}",
        elapsed.as_secs_f64(),
        load_after.as_deref().unwrap_or("unknown")
    );
    let left = remove_own_shm_files();
    if !left.is_empty() {
        eprintln!("warning: removed files a guard left behind: {left:?}");
    }
    let kids = children();
    if !kids.is_empty() {
        eprintln!("warning: child processes still running: {kids:?}");
    }
    if args.json {
        let extras = JsonExtras {
            skipped: skipped
                .iter()
                .map(|(c, why)| (c.name.clone(), c.payload, c.placement.as_str(), why.clone()))
                .collect(),
            failures: &failures,
            targets: &targets,
            svg: svg_shown,
            load: (load_before, load_after),
        };
        println!("{}", render::json(&rows, &extras));
    }
    let missed = targets
        .iter()
        .filter(|t| t.verdict == Verdict::Missed)
        .count();
    eprintln!(
        "{} rows, {} failed, {} targets missed",
        rows.len(),
        failures.len(),
        missed
    );
    if !failures.is_empty() || !left.is_empty() || !kids.is_empty() {
        std::process::exit(1);
    }
}
