//! Random kills: a server and clients work while the test kills one of them with SIGKILL at a
//! random moment, over and over, and starts a new one. After every kill: the cleanup ran, every
//! live client makes progress again (no call hung), no client saw an error QNX would not give
//! (only EBADF/ESRCH from sends, ENOENT while no server has the name), and at the end nothing of
//! the dead is left.
//!
//! `QSIM_RANDOM_KILLS` sets the number of kills (default 1000).

use kernel_sim::{Limits, Pid};
use qsim_tests::{Helper, TestSystem, Watchdog};

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

fn wait_progress(h: &Helper, who: &str) {
    loop {
        let l = h.line(&format!("progress of {who}"));
        assert!(
            !l.starts_with("BADERR"),
            "{who} saw a disallowed error: {l}"
        );
        if l.starts_with("PROGRESS") {
            return;
        }
    }
}

#[test]
fn random_kills_of_servers_and_clients_leave_no_hung_call_and_no_leak() {
    let kills: u32 = std::env::var("QSIM_RANDOM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let _w = Watchdog::new("random_kills", 1200);
    let limits = Limits {
        max_processes: 8,
        threads_per_process: 3,
        max_channels: 8,
        max_coids: 16,
        max_msg_size: 1024,
        max_pulses: 64,
        max_names: 4,
    };
    let ts = TestSystem::new("randkill", limits);
    let s = &ts.sys;
    let spawn_server = || Helper::spawn(HELPER, &["name-server", &ts.name, "rk"]);
    let spawn_client =
        |i: usize| Helper::spawn(HELPER, &["pound", &ts.name, "rk", &(i * 1000).to_string()]);
    let mut server = spawn_server();
    server.expect("READY ");
    let mut clients: Vec<Helper> = (0..3).map(spawn_client).collect();
    for (i, c) in clients.iter().enumerate() {
        wait_progress(c, &format!("client {i}"));
    }
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let (mut server_kills, mut client_kills) = (0, 0);
    for k in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % 6) as usize; // 0..=2: the server; 3..=5: a client
        let (pid, respawned_server) = if victim < 3 {
            let pid = server.pid;
            server.kill();
            server_kills += 1;
            (pid, true)
        } else {
            let i = victim - 3;
            let pid = clients[i].pid;
            clients[i].kill();
            client_kills += 1;
            clients[i] = spawn_client(i);
            (pid, false)
        };
        // The survivors' watchers clean up; wait for that event.
        while s.is_registered(Pid(pid)) {
            std::thread::yield_now();
        }
        if respawned_server {
            server = spawn_server();
            server.expect("READY ");
        }
        for (i, c) in clients.iter().enumerate() {
            wait_progress(c, &format!("client {i} after kill {k}"));
        }
        let snap = s.snapshot();
        assert!(
            snap.processes
                .iter()
                .all(|p| p.running || p.pid == s.pid().0),
            "kill {k}: a dead process is still registered\n{snap}"
        );
        assert!(
            snap.counts.processes <= 5,
            "kill {k}: too many processes\n{snap}"
        );
    }
    println!("{kills} kills ({server_kills} servers, {client_kills} clients); every client progressed after each");
    // Tear everything down and check that nothing is left but this process.
    let pids: Vec<i32> = std::iter::once(server.pid)
        .chain(clients.iter().map(|c| c.pid))
        .collect();
    server.kill();
    for c in &mut clients {
        c.kill();
    }
    for pid in pids {
        while s.is_registered(Pid(pid)) {
            std::thread::yield_now();
        }
    }
    let snap = s.snapshot();
    let c = snap.counts;
    assert_eq!(
        (c.processes, c.channels, c.connections, c.names, c.pulses),
        (1, 0, 0, 0, 0),
        "leak after the run\n{snap}"
    );
}
