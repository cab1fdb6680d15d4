//! The send path allocates nothing: a global counting allocator (dhat's, in testing mode) sees no
//! heap block between the first and the last of many round trips, on the client or the server
//! side (both threads are in this process). The cross-process cost is the same code.

use kernel_sim::SystemBuilder;
use kernel_sim::{Pid, Received};
use qsim_tests::{small_limits, Watchdog};
use std::time::Duration;

struct Remove(String);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.0);
    }
}

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn send_receive_reply_make_no_heap_allocation() {
    let _w = Watchdog::new("no_alloc", 60);
    let _profiler = dhat::Profiler::builder().testing().build();
    // The watcher thread allocates when it rescans the process table; push its rescan out of
    // the measured window (its time constant is configurable for exactly this).
    let name = format!("{}noalloc-{}", qsim_tests::PREFIX, std::process::id());
    let _ = kernel_sim::remove_system(&name);
    let sys = SystemBuilder::new()
        .name(&name)
        .limits(small_limits())
        .watch_scan(Duration::from_secs(3600))
        .create()
        .unwrap();
    let _remove = Remove(name);
    let s = &sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let server = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match s.msg_receive(chid, &mut buf) {
                    Ok(Received::Message { rcvid, info }) => {
                        let n = info.msglen as usize;
                        s.msg_reply(rcvid, n as i32, &buf[..n]).unwrap();
                    }
                    Ok(Received::Pulse(_)) | Err(_) => return,
                }
            }
        })
    };
    let mut rep = [0u8; 8];
    // Warm up: the first call of each thread allocates its thread-slot record.
    for _ in 0..10 {
        s.msg_send(coid, b"12345678", &mut rep).unwrap();
    }
    // dhat counts every thread's allocations; other threads of the test (the watchdog's first
    // channel wait, a thread starting up on a loaded machine) can allocate once in a while. A send
    // path that allocated would do so in every window; so the claim holds if one window of 20,000
    // round trips shows none.
    let mut windows = Vec::new();
    for _ in 0..5 {
        let before = dhat::HeapStats::get();
        for i in 0..10_000u64 {
            s.msg_send(coid, &i.to_le_bytes(), &mut rep).unwrap();
            s.msg_sendv(
                coid,
                &[&i.to_le_bytes()[..4], &i.to_le_bytes()[4..]],
                &mut [&mut rep[..]],
            )
            .unwrap();
        }
        let after = dhat::HeapStats::get();
        windows.push(after.total_blocks - before.total_blocks);
        if windows.last() == Some(&0) {
            break;
        }
    }
    s.msg_send_pulse(coid, 10, 1, 0).unwrap();
    server.join().unwrap();
    println!("heap blocks allocated per window of 20000 round trips: {windows:?}");
    dhat::assert!(windows.contains(&0), "every window allocated: {windows:?}");
}
