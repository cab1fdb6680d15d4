//! A corrupted or hostile arena yields errors, never a panic or a hang: random words of a live
//! system (past the header, which attach validates) are overwritten, then every non-blocking call
//! is made with handles that point everywhere, and the process finally releases its registration
//! over the garbage.

use kernel_sim::{Chid, Coid, Limits, Pid, Rcvid, Scoid, SystemBuilder, SIDE_CHANNEL};
use qsim_tests::{Watchdog, PREFIX};
use std::os::unix::fs::FileExt;
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failing seed can be replayed.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn calls_on_a_scribbled_arena_return_errors_and_never_panic() {
    let _w = Watchdog::new("corrupt", 300);
    let limits = Limits {
        max_processes: 4,
        threads_per_process: 2,
        max_channels: 8,
        max_coids: 16,
        max_msg_size: 256,
        max_pulses: 16,
        max_names: 4,
    };
    let mut calls = 0u64;
    let mut errors = 0u64;
    for seed in 1..=40u64 {
        let name = format!("{PREFIX}corrupt-{}-{seed}", std::process::id());
        let _ = kernel_sim::remove_system(&name);
        let sys = SystemBuilder::new()
            .name(&name)
            .limits(limits)
            .lock_poll(Duration::from_millis(1))
            .create()
            .unwrap();
        // Some live objects first, so the scribbles land among real state.
        let chid = sys.channel_create(0).unwrap();
        let coid = sys.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
        let _side = sys
            .connect_attach(0, Pid(0), chid, SIDE_CHANNEL, 0)
            .unwrap();
        let _ = sys.msg_send_pulse(coid, 10, 1, 1);
        let _ = sys.name_attach("victim");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(kernel_sim::system_path(&name))
            .unwrap();
        let len = file.metadata().unwrap().len();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for round in 0..100 {
            // Scribble a few words in the objects' regions (skip the 128-byte header).
            for _ in 0..(1 + rng.below(8)) {
                let off = 128 + 4 * rng.below((len - 132) / 4);
                let v = match rng.below(4) {
                    0 => 0u32,
                    1 => u32::MAX,
                    2 => rng.below(64) as u32,
                    _ => rng.next() as u32,
                };
                file.write_at(&v.to_le_bytes(), off).unwrap();
            }
            let h = |r: &mut Rng| -> i32 {
                match r.below(3) {
                    0 => r.below(20) as i32,
                    1 => SIDE_CHANNEL | r.below(20) as i32,
                    _ => r.next() as i32,
                }
            };
            let results: Vec<bool> = vec![
                sys.connect_attach(0, Pid(0), Chid(h(&mut rng)), rng.below(20) as i32, 0)
                    .is_err(),
                sys.connect_detach(Coid(h(&mut rng))).is_err(),
                sys.connect_server_info(Pid(0), Coid(h(&mut rng))).is_err(),
                sys.connect_client_info(Scoid(h(&mut rng))).is_err(),
                sys.connect_flags(Pid(0), Coid(h(&mut rng)), 1, 1).is_err(),
                sys.msg_send_pulse(Coid(h(&mut rng)), 10, 3, round).is_err(),
                sys.msg_reply(Rcvid(h(&mut rng)), 0, b"x").is_err(),
                sys.msg_error(Rcvid(h(&mut rng)), kernel_sim::Errno::IO)
                    .is_err(),
                sys.msg_read(Rcvid(h(&mut rng)), &mut [0u8; 8], rng.below(300) as usize)
                    .is_err(),
                sys.msg_write(Rcvid(h(&mut rng)), b"abc", rng.below(300) as usize)
                    .is_err(),
                sys.msg_info(Rcvid(h(&mut rng))).is_err(),
                sys.channel_stats(Chid(h(&mut rng))).is_err(),
                sys.channel_create(rng.next() as u32).is_err(),
                sys.channel_destroy(Chid(h(&mut rng))).is_err(),
                sys.connect_server_info(Pid(rng.next() as i32), Coid(0))
                    .is_err(),
                sys.name_detach(kernel_sim::NameAttach {
                    chid: Chid(h(&mut rng)),
                    path: "/dev/name/local/victim".into(),
                })
                .is_err(),
            ];
            calls += results.len() as u64;
            errors += results.iter().filter(|e| **e).count() as u64;
        }
        drop(sys);
        let _ = kernel_sim::remove_system(&name);
    }
    println!("40 scribbled systems, {calls} calls, {errors} returned errors, no panic, no hang");
    assert!(errors > 0);
}
