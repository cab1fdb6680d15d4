//! Death detection: how long after `kill -9` of a server its client, REPLY-blocked on it, wakes
//! with `ESRCH`. The client is this process (its watcher thread holds the server's pidfd and runs
//! the cleanup); the server is a `kernel-server` peer that holds every message. Each sample:
//! start a server (outside the timing), send, wait until this thread shows REPLY-blocked in the
//! system's snapshot, then time from just before the SIGKILL to the send's return.
//!
//! `cargo bench -p benches --bench death` (`QSIM_DEATH_SAMPLES` sets the count, default 40).
#![deny(unsafe_code)]

use benches::process::{PeerProcess, Placement};
use benches::role::{Role, HOLD_ENV, SYSTEM_ENV, WAIT_ENV};
use benches::rtt::{bench_limits, ArenaGuard};
use kernel_sim::kern::introspect::ThreadState;
use kernel_sim::{Chid, Errno, Pid, SystemBuilder};
use std::time::{Duration, Instant};

fn one_sample(i: usize) -> Duration {
    let arena = ArenaGuard::new(format!(
        "{}{}-death-{i}",
        benches::floor::SHM_PREFIX,
        std::process::id()
    ));
    let sys = SystemBuilder::new()
        .name(arena.name())
        .limits(bench_limits())
        .create()
        .expect("create");
    let env = [
        (SYSTEM_ENV, arena.name().to_owned()),
        (WAIT_ENV, "system".to_owned()),
        (HOLD_ENV, "1".to_owned()),
    ];
    let (server, ready) =
        PeerProcess::spawn(Role::KernelServer, &env, &Placement::unpinned()).expect("server");
    let mut words = ready
        .split_ascii_whitespace()
        .map(|w| w.parse::<i32>().expect("ready line"));
    let (pid, chid) = (words.next().expect("pid"), words.next().expect("chid"));
    let coid = sys
        .connect_attach(0, Pid(pid), Chid(chid), 0, 0)
        .expect("connect");
    let client = {
        let sys = sys.clone();
        std::thread::spawn(move || {
            let r = sys.msg_send(coid, b"held", &mut []);
            (Instant::now(), r)
        })
    };
    // Wait (outside the timing) until the client is REPLY-blocked on the server.
    let me = sys.pid().0;
    loop {
        let snap = sys.snapshot();
        let blocked = snap
            .processes
            .iter()
            .filter(|p| p.pid == me)
            .flat_map(|p| &p.threads)
            .any(|t| matches!(t.state, ThreadState::Reply { pid: p, .. } if p == pid));
        if blocked {
            break;
        }
        std::thread::yield_now();
    }
    let t0 = Instant::now();
    benches::floor::os::sigkill(server.pid());
    let (t1, r) = client.join().expect("client thread");
    assert_eq!(r, Err(Errno::SRCH), "the client wakes with ESRCH");
    drop(server);
    drop(sys);
    drop(arena);
    t1 - t0
}

fn main() {
    if let Some(code) = benches::role::dispatch() {
        std::process::exit(code);
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks for test names; this bench has none to list.
    }
    let n: usize = std::env::var("QSIM_DEATH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut samples: Vec<Duration> = (0..n).map(one_sample).collect();
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "death detection, kill -9 to the blocked client's ESRCH, {n} samples: median {:.1} us, p90 {:.1} us, min {:.1} us, max {:.1} us",
        pick(0.5).as_secs_f64() * 1e6,
        pick(0.9).as_secs_f64() * 1e6,
        pick(0.0).as_secs_f64() * 1e6,
        pick(1.0).as_secs_f64() * 1e6
    );
}
