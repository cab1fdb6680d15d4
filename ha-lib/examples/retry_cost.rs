//! What the default retry policy costs when a send queue stays full: the time 1000 attempts
//! take before `EAGAIN` reaches the caller, and what one zero-retry failure costs.
//!
//! `cargo run --release -p ha-lib --example retry_cost`

use ha_lib::{Ha, RetryPolicy};
use kernel_sim::{Pid, SystemBuilder};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("qsim-retry-cost-{}", std::process::id());
    let sys = SystemBuilder::new().name(&name).create()?;
    let res = measure(&sys);
    drop(sys);
    let _ = kernel_sim::remove_system(&name);
    res
}

fn measure(sys: &kernel_sim::System) -> Result<(), Box<dyn std::error::Error>> {
    let ha = Ha::install(sys)?;
    // A channel nobody receives on, bounded to one queued entry, filled by one pulse: every
    // send finds it full.
    let chid = sys.channel_create(0)?;
    sys.channel_queue_limit(chid, 1)?;
    let coid = sys.connect_attach(0, Pid(0), chid, 0, 0)?;
    sys.msg_send_pulse(coid, -1, 1, 0)?;
    let runs = 9;
    let mut full = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = sys.msg_send(coid, b"x", &mut []);
        full.push(t.elapsed());
        assert_eq!(r, Err(kernel_sim::Errno::AGAIN));
    }
    ha.set_retry_policy(RetryPolicy::none());
    let mut none = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let _ = sys.msg_send(coid, b"x", &mut []);
        none.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let p = RetryPolicy::default();
    println!(
        "default policy ({} attempts: {} spins, {} yields, then sleeps of {:?}): median {:?} until EAGAIN ({runs} runs)",
        p.attempts,
        p.spins,
        p.yields,
        p.sleep,
        median(&mut full)
    );
    println!(
        "zero-retry mode: median {:?} per failed send (1000 sends)",
        median(&mut none)
    );
    println!("retry attempts counted: {}", ha.process_counters().retries);
    Ok(())
}
