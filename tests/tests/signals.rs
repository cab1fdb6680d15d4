//! Signals unblock kernel calls as in QNX: RECEIVE- and SEND-blocked calls return EINTR at once;
//! a REPLY-blocked call returns EINTR at once unless the channel has `_NTO_CHF_UNBLOCK`, where
//! the server gets an UNBLOCK pulse and the client waits for its answer.

use kernel_sim::{chf, pulse_code, signal, Errno, Pid, Received, SendOutcome};
use qsim_tests::{small_limits, TestSystem, Watchdog};
use std::sync::mpsc;

const SIG: i32 = libc::SIGUSR1;

/// Runs `f` on a new thread and returns its OS thread id and join handle.
fn spawn_with_tid<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (i32, std::thread::JoinHandle<T>) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        tx.send(signal::gettid()).unwrap();
        f()
    });
    (rx.recv().unwrap(), h)
}

#[test]
fn signals_unblock_receive_send_and_reply_blocked_calls_as_qnx_does() {
    let _w = Watchdog::new("signals", 60);
    signal::unblock_on(SIG).unwrap();
    let ts = TestSystem::new("signals", small_limits());
    let s = &ts.sys;

    // RECEIVE-blocked.
    let chid = s.channel_create(0).unwrap();
    let s1 = s.clone();
    let (tid, h) = spawn_with_tid(move || s1.msg_receive(chid, &mut [0u8; 16]).map(|_| ()));
    while s.channel_stats(chid).unwrap().receivers < 1 {
        std::thread::yield_now();
    }
    signal::thread_kill(tid, SIG).unwrap();
    assert_eq!(h.join().unwrap(), Err(Errno::INTR));
    assert_eq!(s.channel_stats(chid).unwrap().receivers, 0);

    // SEND-blocked: withdrawn, never received.
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let s2 = s.clone();
    let (tid, h) =
        spawn_with_tid(move || (s2.msg_send(coid, b"x", &mut []), s2.last_send_outcome()));
    while s.channel_stats(chid).unwrap().queued < 1 {
        std::thread::yield_now();
    }
    signal::thread_kill(tid, SIG).unwrap();
    assert_eq!(
        h.join().unwrap(),
        (Err(Errno::INTR), SendOutcome::NotReceived)
    );
    assert_eq!(s.channel_stats(chid).unwrap().queued, 0);

    // REPLY-blocked, no _NTO_CHF_UNBLOCK: released at once; the late reply gets ESRCH.
    let s3 = s.clone();
    let (tid, h) = spawn_with_tid(move || s3.msg_send(coid, b"y", &mut []));
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    signal::thread_kill(tid, SIG).unwrap();
    assert_eq!(h.join().unwrap(), Err(Errno::INTR));
    assert_eq!(s.msg_reply(rcvid, 0, b""), Err(Errno::SRCH));

    // REPLY-blocked on an UNBLOCK channel: the server is asked, the client waits.
    let uchid = s.channel_create(chf::UNBLOCK).unwrap();
    let ucoid = s.connect_attach(0, Pid(0), uchid, 0, 0).unwrap();
    let s4 = s.clone();
    let (tid, h) = spawn_with_tid(move || s4.msg_send(ucoid, b"z", &mut []));
    let Received::Message { rcvid, .. } = s.msg_receive(uchid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    signal::thread_kill(tid, SIG).unwrap();
    let Received::Pulse(p) = s.msg_receive(uchid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.value), (pulse_code::UNBLOCK, rcvid.0));
    signal::thread_kill(tid, SIG).unwrap(); // a second signal sends no second pulse
    s.msg_reply(rcvid, 8, b"").unwrap();
    assert_eq!(h.join().unwrap(), Ok(8));
    assert_eq!(
        s.channel_stats(uchid).unwrap().queued,
        0,
        "one UNBLOCK pulse per REPLY-blocked period"
    );
}

#[test]
fn across_processes_a_signal_and_timeouts_unblock_a_client_of_another_process() {
    let _w = Watchdog::new("signals_xproc", 60);
    signal::unblock_on(SIG).unwrap();
    let ts = TestSystem::new("signals-xproc", small_limits());
    let s = &ts.sys;
    const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");
    // SEND-blocked on another process's channel nobody receives on.
    let idle = qsim_tests::Helper::spawn(HELPER, &["idle-server", &ts.name]);
    let v = idle.expect("READY ");
    let (pid, chid): (i32, i32) = (v[0].parse().unwrap(), v[1].parse().unwrap());
    let coid = s
        .connect_attach(0, Pid(pid), kernel_sim::Chid(chid), 0, 0)
        .unwrap();
    let tiny = std::time::Duration::from_millis(1);
    assert_eq!(
        s.msg_send_timeout(coid, b"x", &mut [], tiny),
        Err(Errno::TIMEDOUT)
    );
    assert_eq!(s.last_send_outcome(), SendOutcome::NotReceived);
    let s1 = s.clone();
    let (tid, h) = spawn_with_tid(move || s1.msg_send(coid, b"x", &mut []));
    while s
        .channel_stats_of(Pid(pid), kernel_sim::Chid(chid))
        .unwrap()
        .queued
        < 1
    {
        std::thread::yield_now();
    }
    signal::thread_kill(tid, SIG).unwrap();
    assert_eq!(h.join().unwrap(), Err(Errno::INTR));
    // REPLY-blocked on another process that holds the message.
    let hold = qsim_tests::Helper::spawn(HELPER, &["hold-server", &ts.name]);
    let v = hold.expect("READY ");
    let (pid, chid): (i32, i32) = (v[0].parse().unwrap(), v[1].parse().unwrap());
    let coid = s
        .connect_attach(0, Pid(pid), kernel_sim::Chid(chid), 0, 0)
        .unwrap();
    let s2 = s.clone();
    let (tid, h) =
        spawn_with_tid(move || (s2.msg_send(coid, b"y", &mut []), s2.last_send_outcome()));
    hold.expect("HOLDING ");
    signal::thread_kill(tid, SIG).unwrap();
    assert_eq!(
        h.join().unwrap(),
        (Err(Errno::INTR), SendOutcome::ReceivedNoReply)
    );
    let hold2 = qsim_tests::Helper::spawn(HELPER, &["hold-server", &ts.name]);
    let v = hold2.expect("READY ");
    let coid = s
        .connect_attach(
            0,
            Pid(v[0].parse().unwrap()),
            kernel_sim::Chid(v[1].parse().unwrap()),
            0,
            0,
        )
        .unwrap();
    let s3 = s.clone();
    let h = std::thread::spawn(move || {
        s3.msg_send_timeout(coid, b"z", &mut [], std::time::Duration::from_millis(30))
    });
    hold2.expect("HOLDING ");
    assert_eq!(h.join().unwrap(), Err(Errno::TIMEDOUT));
}
