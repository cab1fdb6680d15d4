//! What the kernel reports when a process dies (`kill -9`, no cooperation): the survivors'
//! blocked calls return with QNX's errors, in order, and the dead process's objects are released.
//! Outcomes are checked in the order they must happen; no test measures elapsed time.

use kernel_sim::{chf, cof, pulse_code, Chid, Errno, Pid, Received, SendOutcome};
use qsim_tests::{small_limits, Helper, TestSystem, Watchdog};

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

fn ready(h: &Helper) -> (i32, i32) {
    let v = h.expect("READY ");
    (v[0].parse().unwrap(), v[1].parse().unwrap())
}

#[test]
fn a_client_send_blocked_on_a_killed_server_gets_esrch_and_the_coid_then_gives_ebadf() {
    let _w = Watchdog::new("send_blocked_kill", 60);
    let ts = TestSystem::new("death-send", small_limits());
    let s = &ts.sys;
    let death = s.channel_create(chf::COID_DISCONNECT).unwrap();
    let mut server = Helper::spawn(HELPER, &["idle-server", &ts.name]);
    let (pid, chid) = ready(&server);
    let coid = s.connect_attach(0, Pid(pid), Chid(chid), 0, 0).unwrap();
    let s1 = s.clone();
    let client = std::thread::spawn(move || {
        let r = s1.msg_send(coid, b"never received", &mut [0u8; 8]);
        (r, s1.last_send_outcome())
    });
    while s
        .channel_stats_of(Pid(pid), Chid(chid))
        .map(|c| c.queued)
        .unwrap_or(0)
        == 0
    {
        std::thread::yield_now();
    }
    server.kill();
    let (r, outcome) = client.join().unwrap();
    println!("killed server {pid} while the client was SEND-blocked: {r:?}, {outcome:?}");
    assert_eq!(r, Err(Errno::SRCH));
    assert_eq!(
        outcome,
        SendOutcome::NotReceived,
        "the kernel knows the request was never delivered"
    );
    // The coid stays allocated, dead, until detached.
    assert_eq!(s.msg_send(coid, b"again", &mut []), Err(Errno::BADF));
    assert_eq!(s.msg_send_pulse(coid, 10, 1, 1), Err(Errno::BADF));
    let info = s.connect_server_info(Pid(0), coid).unwrap();
    assert_eq!((info.coid, info.flags & cof::DEAD), (coid.0, cof::DEAD));
    assert_eq!(
        s.connect_attach(0, Pid(pid), Chid(chid), 0, 0),
        Err(Errno::SRCH)
    );
    // And the client's death channel hears of it: one COIDDEATH per coid.
    let mut buf = [0u8; 16];
    let Received::Pulse(p) = s.msg_receive(death, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!(
        (p.code, p.value, p.scoid),
        (pulse_code::COIDDEATH, coid.0, -1)
    );
    s.connect_detach(coid).unwrap();
}

#[test]
fn a_client_reply_blocked_on_a_killed_server_gets_esrch_and_knows_it_was_received() {
    let _w = Watchdog::new("reply_blocked_kill", 60);
    let ts = TestSystem::new("death-reply", small_limits());
    let s = &ts.sys;
    let mut server = Helper::spawn(HELPER, &["hold-server", &ts.name]);
    let (pid, chid) = ready(&server);
    let coid = s.connect_attach(0, Pid(pid), Chid(chid), 0, 0).unwrap();
    let s1 = s.clone();
    let client = std::thread::spawn(move || {
        let r = s1.msg_send(coid, b"received, never answered", &mut [0u8; 8]);
        (r, s1.last_send_outcome())
    });
    server.expect("HOLDING ");
    server.kill();
    let (r, outcome) = client.join().unwrap();
    println!("killed server {pid} while the client was REPLY-blocked: {r:?}, {outcome:?}");
    assert_eq!(r, Err(Errno::SRCH));
    assert_eq!(
        outcome,
        SendOutcome::ReceivedNoReply,
        "outcome unknown: the server had the request"
    );
    assert_eq!(s.msg_send(coid, b"again", &mut []), Err(Errno::BADF));
}

#[test]
fn a_killed_client_s_rcvid_gives_esrch_and_its_connection_ends_with_a_disconnect_pulse() {
    let _w = Watchdog::new("client_kill", 60);
    let ts = TestSystem::new("death-client", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(chf::DISCONNECT).unwrap();
    let me = s.pid().0.to_string();
    let chid_s = chid.0.to_string();
    // One client REPLY-blocked (we received), one SEND-blocked (queued behind it).
    let mut replied = qsim_tests::send_one(HELPER, &ts.name, &me, &chid_s, 8, 8, 10);
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, info } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    let mut queued = qsim_tests::send_one(HELPER, &ts.name, &me, &chid_s, 8, 8, 10);
    queued.expect("SENDING ");
    while s.channel_stats(chid).unwrap().queued == 0 {
        std::thread::yield_now();
    }
    let (qpid, rpid) = (queued.pid, replied.pid);
    queued.kill();
    replied.kill();
    // Wait for the cleanup (the watcher's, or whoever meets the dead first) to have run.
    while s.is_registered(Pid(qpid)) || s.is_registered(Pid(rpid)) {
        std::thread::yield_now();
    }
    // Both connections end: two DISCONNECT pulses (boosted ahead of anything else), and the
    // queued message is gone.
    let mut scoids = Vec::new();
    for _ in 0..2 {
        match s.msg_receive(chid, &mut buf).unwrap() {
            Received::Pulse(p) => {
                assert_eq!(p.code, pulse_code::DISCONNECT);
                scoids.push(p.scoid);
            }
            Received::Message { .. } => panic!("the dead client's queued message was delivered"),
        }
    }
    assert!(scoids.contains(&info.scoid));
    assert_eq!(s.channel_stats(chid).unwrap().queued, 0);
    assert_eq!(s.msg_reply(rcvid, 0, b"too late"), Err(Errno::SRCH));
    assert_eq!(s.msg_read(rcvid, &mut buf, 0), Err(Errno::SRCH));
    for sc in scoids {
        s.scoid_detach(kernel_sim::Scoid(sc)).unwrap();
    }
}

#[test]
fn a_killed_server_s_name_is_released_and_can_be_attached_again() {
    let _w = Watchdog::new("name_release", 60);
    let ts = TestSystem::new("death-name", small_limits());
    let s = &ts.sys;
    let mut server = Helper::spawn(HELPER, &["name-server", &ts.name, "svc"]);
    ready(&server);
    let coid = s.name_open("svc").unwrap();
    server.kill();
    // The first send after the kill meets the dead server (the watcher may or may not have
    // cleaned up yet; either way the caller sees QNX's answer, never a hang).
    let r = s.msg_send(coid, b"hello", &mut []);
    assert!(r == Err(Errno::SRCH) || r == Err(Errno::BADF), "{r:?}");
    // After the cleanup (which the failed send waited for), the name is gone and free again.
    assert_eq!(s.msg_send(coid, b"hello", &mut []), Err(Errno::BADF));
    assert_eq!(s.name_open("svc"), Err(Errno::NOENT));
    let att = s
        .name_attach("svc")
        .expect("a restarted server takes its name back at once");
    s.name_detach(att).unwrap();
}

#[test]
fn timeouts_withdraw_a_queued_request_and_release_a_reply_blocked_client() {
    let _w = Watchdog::new("timeouts", 60);
    let ts = TestSystem::new("death-timeout", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let tiny = std::time::Duration::from_millis(1);
    // SEND-blocked: nobody receives; the request is withdrawn and never seen.
    assert_eq!(
        s.msg_send_timeout(coid, b"x", &mut [], tiny),
        Err(Errno::TIMEDOUT)
    );
    assert_eq!(s.last_send_outcome(), SendOutcome::NotReceived);
    assert_eq!(s.channel_stats(chid).unwrap().queued, 0);
    // RECEIVE: a zero timeout does not block.
    let mut buf = [0u8; 16];
    assert_eq!(
        s.msg_receive_timeout(chid, &mut buf, std::time::Duration::ZERO),
        Err(Errno::TIMEDOUT)
    );
    assert_eq!(
        s.channel_stats(chid).unwrap().receivers,
        0,
        "the receiver left the stack"
    );
    // The QNX form: armed for the next call only.
    s.timer_timeout(kernel_sim::timeout::RECEIVE, None).unwrap();
    assert_eq!(s.msg_receive(chid, &mut buf), Err(Errno::TIMEDOUT));
    // REPLY-blocked without _NTO_CHF_UNBLOCK: released at once; the late reply gets ESRCH.
    let s1 = s.clone();
    let client = std::thread::spawn(move || {
        let r = s1.msg_send_timeout(coid, b"slow", &mut [], std::time::Duration::from_millis(20));
        (r, s1.last_send_outcome())
    });
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    let (r, outcome) = client.join().unwrap();
    assert_eq!(
        (r, outcome),
        (Err(Errno::TIMEDOUT), SendOutcome::ReceivedNoReply)
    );
    assert_eq!(s.msg_reply(rcvid, 0, b""), Err(Errno::SRCH));
}

#[test]
fn on_an_unblock_channel_a_reply_timeout_becomes_an_unblock_pulse() {
    let _w = Watchdog::new("unblock_timeout", 60);
    let ts = TestSystem::new("death-unblock", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(chf::UNBLOCK).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let s1 = s.clone();
    let client = std::thread::spawn(move || {
        s1.msg_send_timeout(coid, b"x", &mut [], std::time::Duration::from_millis(1))
    });
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.value), (pulse_code::UNBLOCK, rcvid.0));
    s.msg_error(rcvid, Errno::INTR).unwrap();
    assert_eq!(
        client.join().unwrap(),
        Err(Errno::INTR),
        "the client waited for the server's answer"
    );
}

#[test]
fn a_thread_that_exits_sends_threaddeath_to_a_death_channel() {
    let _w = Watchdog::new("threaddeath", 60);
    let ts = TestSystem::new("death-thread", small_limits());
    let s = &ts.sys;
    let death = s.channel_create(chf::THREAD_DEATH).unwrap();
    s.set_priority(10).unwrap(); // this thread takes the first thread slot (tid 1)
    let s1 = s.clone();
    std::thread::spawn(move || {
        s1.set_priority(33).unwrap();
    })
    .join()
    .unwrap();
    let mut buf = [0u8; 16];
    let Received::Pulse(p) = s.msg_receive(death, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!(
        (p.code, p.scoid, p.priority),
        (pulse_code::THREADDEATH, -1, 33)
    );
    assert_eq!(
        p.value, 2,
        "tid of the second thread slot (the main test thread has the first)"
    );
}

#[test]
fn a_client_killed_reply_blocked_on_an_unblock_channel_lingers_until_the_reply() {
    let _w = Watchdog::new("unblock_linger", 60);
    let ts = TestSystem::new("death-linger", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(chf::UNBLOCK | chf::DISCONNECT).unwrap();
    let mut client = qsim_tests::send_one(
        HELPER,
        &ts.name,
        &s.pid().0.to_string(),
        &chid.0.to_string(),
        8,
        8,
        10,
    );
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, info } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    let cpid = client.pid;
    client.kill();
    // The cleanup turns the dead thread into a lingering one: first the UNBLOCK pulse...
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.value), (pulse_code::UNBLOCK, rcvid.0));
    // The rest of the process is cleaned up (the pulse was sent during that cleanup).
    while s.is_registered(Pid(cpid)) {
        std::thread::yield_now();
    }
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        0,
        "no DISCONNECT before the reply"
    );
    let snap = s.snapshot();
    assert_eq!(
        snap.counts.connections, 1,
        "its connection lives on for the reply"
    );
    // The introspection view shows the lingering thread as a dead client's, REPLY-blocked on
    // us, and under no live process (its process slot may be reused meanwhile).
    assert_eq!(snap.orphans.len(), 1, "{snap}");
    assert!(
        snap.orphans[0].state.to_string().starts_with("REPLY"),
        "{snap}"
    );
    assert!(snap.processes.iter().all(|p| p.pid != cpid));
    // ...the server's reply succeeds (and is discarded)...
    assert_eq!(s.msg_reply(rcvid, 0, b"too late, but fine"), Ok(()));
    // ...and completes the teardown: then the DISCONNECT pulse.
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.scoid), (pulse_code::DISCONNECT, info.scoid));
    s.scoid_detach(kernel_sim::Scoid(p.scoid)).unwrap();
    let snap = s.snapshot();
    assert!(snap.orphans.is_empty());
    let c = snap.counts;
    assert_eq!((c.processes, c.connections, c.pulses), (1, 0, 0));
    assert_eq!(s.msg_reply(rcvid, 0, b""), Err(Errno::SRCH));
}

#[test]
fn an_immediate_reply_timeout_never_delivers_the_message() {
    let _w = Watchdog::new("immediate_reply_timeout", 60);
    let ts = TestSystem::new("death-immediate", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    // A receiver is waiting: the send fails before the copy, and the receiver keeps waiting.
    let s1 = s.clone();
    let receiver =
        std::thread::spawn(move || s1.msg_receive(chid, &mut [0u8; 16]).map(|r| r.rcvid()));
    while s.channel_stats(chid).unwrap().receivers < 1 {
        std::thread::yield_now();
    }
    s.timer_timeout(kernel_sim::timeout::REPLY, None).unwrap();
    assert_eq!(s.msg_send(coid, b"never", &mut []), Err(Errno::TIMEDOUT));
    assert_eq!(s.last_send_outcome(), SendOutcome::NotReceived);
    assert_eq!(
        s.channel_stats(chid).unwrap().receivers,
        1,
        "the receiver got nothing"
    );
    s.msg_send_pulse(coid, 10, 1, 0).unwrap();
    assert_eq!(receiver.join().unwrap(), Ok(0), "it then got the pulse");
    // Queued: dropped with ETIMEDOUT when a receiver reaches it.
    let s2 = s.clone();
    let sender = std::thread::spawn(move || {
        s2.timer_timeout(kernel_sim::timeout::REPLY, None).unwrap();
        s2.msg_send(coid, b"queued", &mut [])
    });
    while s.channel_stats(chid).unwrap().queued < 1 {
        std::thread::yield_now();
    }
    s.msg_send_pulse(coid, 1, 2, 0).unwrap();
    let mut buf = [0u8; 16];
    match s.msg_receive(chid, &mut buf).unwrap() {
        Received::Pulse(p) => assert_eq!(p.code, 2, "the queued message was skipped"),
        other => panic!("the message was delivered: {other:?}"),
    }
    assert_eq!(sender.join().unwrap(), Err(Errno::TIMEDOUT));
}

#[test]
fn any_kernel_call_disarms_a_timer_timeout() {
    let _w = Watchdog::new("disarm", 60);
    let ts = TestSystem::new("death-disarm", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    s.timer_timeout(kernel_sim::timeout::RECEIVE, None).unwrap();
    s.connect_flags(Pid(0), coid, 0, 0).unwrap(); // a kernel call: the timeout is gone
    let s1 = s.clone();
    let poker = std::thread::spawn(move || {
        while s1.channel_stats(chid).unwrap().receivers < 1 {
            std::thread::yield_now();
        }
        s1.msg_send_pulse(coid, 10, 6, 0)
    });
    let mut buf = [0u8; 16];
    let r = s.msg_receive(chid, &mut buf).unwrap();
    assert!(
        matches!(r, Received::Pulse(p) if p.code == 6),
        "it blocked until the pulse: {r:?}"
    );
    poker.join().unwrap().unwrap();
}
