//! Every error SEMANTICS.md lists for the messaging and connection calls that involves no death,
//! signal or timeout (those come with the death-handling tests).

use kernel_sim::{chf, cof, Chid, Coid, Errno, Limits, Pid, Rcvid, Received, Scoid, SIDE_CHANNEL};
use qsim_tests::{small_limits, TestSystem, Watchdog};

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

#[test]
fn sends_on_bad_coids_fail_with_ebadf() {
    let ts = TestSystem::new("err-coid", small_limits());
    let s = &ts.sys;
    assert_eq!(s.msg_send(Coid(0), b"x", &mut []), Err(Errno::BADF));
    assert_eq!(s.msg_send(Coid(-1), b"x", &mut []), Err(Errno::BADF));
    assert_eq!(
        s.msg_send(Coid(SIDE_CHANNEL | 5), b"x", &mut []),
        Err(Errno::BADF)
    );
    assert_eq!(s.msg_send(Coid(1 << 20), b"x", &mut []), Err(Errno::BADF));
    assert_eq!(s.msg_send_pulse(Coid(0), 10, 1, 1), Err(Errno::BADF));
    // A chid's pool number is not a coid.
    let chid = s.channel_create(0).unwrap();
    assert_eq!(
        s.msg_send(Coid(SIDE_CHANNEL | chid.0), b"x", &mut []),
        Err(Errno::BADF)
    );
    assert_eq!(s.connect_detach(Coid(4)), Err(Errno::INVAL));
    assert_eq!(
        s.connect_flags(Pid(0), Coid(4), cof::CLOEXEC, 0),
        Err(Errno::BADF)
    );
}

#[test]
fn bad_chids_and_pids_give_esrch_or_einval() {
    let ts = TestSystem::new("err-chid", small_limits());
    let s = &ts.sys;
    let mut buf = [0u8; 32];
    assert_eq!(s.msg_receive(Chid(1), &mut buf), Err(Errno::SRCH));
    assert_eq!(s.msg_receive(Chid(-3), &mut buf), Err(Errno::SRCH));
    assert_eq!(s.channel_destroy(Chid(1)), Err(Errno::INVAL));
    assert_eq!(s.connect_attach(0, Pid(0), Chid(1), 0, 0), Err(Errno::SRCH));
    assert_eq!(
        s.connect_attach(0, Pid(999_999_999), Chid(1), 0, 0),
        Err(Errno::SRCH)
    );
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    // The scoid (pool slot 2) is not a chid.
    assert_eq!(s.connect_attach(0, Pid(0), Chid(2), 0, 0), Err(Errno::SRCH));
    assert_eq!(
        s.connect_attach(1, Pid(0), chid, 0, 0),
        Err(Errno::NOREMOTE)
    );
    assert_eq!(
        s.connect_attach(0, Pid(0), chid, 0, 0x8000),
        Err(Errno::INVAL)
    );
    assert_eq!(
        s.connect_attach(0, Pid(0), chid, 32, 0),
        Err(Errno::INVAL),
        "index at the coid limit"
    );
    assert_eq!(s.channel_destroy(chid), Ok(()));
    assert_eq!(
        s.msg_send(coid, b"x", &mut []),
        Err(Errno::BADF),
        "the coid stays, dead"
    );
    let info = s.connect_server_info(Pid(0), coid).unwrap();
    assert_eq!(info.flags & cof::DEAD, cof::DEAD);
    assert_eq!(
        s.connect_server_info_live(Pid(0), coid),
        Err(Errno::INVAL),
        "dead ones are skipped"
    );
    assert_eq!(s.connect_detach(coid), Ok(()));
    assert_eq!(s.set_priority(0), Err(Errno::INVAL));
}

#[test]
fn bad_rcvids_give_esrch() {
    let ts = TestSystem::new("err-rcvid", small_limits());
    let s = &ts.sys;
    for r in [0, -1, 1, 0x10000, 0x7FFF_0001, 0x0005_0003] {
        assert_eq!(
            s.msg_reply(Rcvid(r), 0, b""),
            Err(Errno::SRCH),
            "reply {r:#x}"
        );
        assert_eq!(s.msg_error(Rcvid(r), Errno::IO), Err(Errno::SRCH));
        assert_eq!(s.msg_read(Rcvid(r), &mut [0u8; 4], 0), Err(Errno::SRCH));
        assert_eq!(s.msg_write(Rcvid(r), b"x", 0), Err(Errno::SRCH));
        assert_eq!(s.msg_info(Rcvid(r)).map(|_| ()), Err(Errno::SRCH));
    }
}

#[test]
fn a_rcvid_of_another_process_channel_gives_esrch() {
    let _w = Watchdog::new("foreign_rcvid", 60);
    let ts = TestSystem::new("err-foreign", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let client = qsim_tests::send_one(
        HELPER,
        &ts.name,
        &s.pid().0.to_string(),
        &chid.0.to_string(),
        8,
        8,
        10,
    );
    let mut buf = [0u8; 8];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    // Another process cannot reply to (or read, write, ask about) a rcvid of our channel: QNX
    // checks the rcvid belongs to one of the caller's channels.
    let third = qsim_tests::Helper::spawn(HELPER, &["reply", &ts.name, &rcvid.0.to_string()]);
    assert_eq!(third.expect("REPLY ")[0], "ESRCH");
    // Another handle of this same process shares its registration: allowed.
    let other = kernel_sim::SystemBuilder::new()
        .name(&ts.name)
        .attach()
        .unwrap();
    assert_eq!(other.msg_reply(rcvid, 0, b""), Ok(()));
    assert_eq!(client.expect("STATUS ")[0], "0");
}

#[test]
fn messages_over_the_size_limit_give_emsgsize() {
    let limits = Limits {
        max_msg_size: 1024,
        ..small_limits()
    };
    let ts = TestSystem::new("err-size", limits);
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    assert_eq!(s.msg_send(coid, &[0u8; 1025], &mut []), Err(Errno::MSGSIZE));
    assert_eq!(
        s.msg_sendv(coid, &[&[0u8; 1000], &[0u8; 25]], &mut []),
        Err(Errno::MSGSIZE)
    );
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        0,
        "nothing was queued"
    );
    assert_eq!(
        s.msg_reply(Rcvid(0x10000), 0, &[0u8; 1025]),
        Err(Errno::MSGSIZE)
    );
}

#[test]
fn full_tables_give_the_documented_errors() {
    // Coid limit 4: pool slots 1..=3 (slot 0 is the process manager's).
    let limits = Limits {
        max_coids: 4,
        max_channels: 2,
        max_pulses: 2,
        threads_per_process: 2,
        ..small_limits()
    };
    let ts = TestSystem::new("err-full", limits);
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    assert_eq!(chid, Chid(1));
    // A shared connection (scoid 2) and a NOSHARE one (scoid 3) fill our own pool of scoids.
    let a = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let b = s.connect_attach(0, Pid(0), chid, 0, cof::NOSHARE).unwrap();
    assert_eq!((a, b), (Coid(0), Coid(1)));
    assert_eq!(
        s.connect_attach(0, Pid(0), chid, 0, cof::NOSHARE),
        Err(Errno::AGAIN),
        "scoid pool full"
    );
    assert_eq!(
        s.channel_create(0),
        Err(Errno::AGAIN),
        "no pool slot for a chid"
    );
    // Shared connections need no new scoid: fd coids up to the limit, then EMFILE.
    let c = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let d = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    assert_eq!((c, d), (Coid(2), Coid(3)));
    assert_eq!(
        s.connect_server_info(Pid(0), c).unwrap().scoid,
        s.connect_server_info(Pid(0), a).unwrap().scoid
    );
    assert_eq!(s.connect_attach(0, Pid(0), chid, 0, 0), Err(Errno::MFILE));
    assert_eq!(
        s.connect_attach(0, Pid(0), chid, SIDE_CHANNEL, 0),
        Err(Errno::MFILE)
    );
    // Pulse pool of 2.
    s.msg_send_pulse(a, 10, 1, 1).unwrap();
    s.msg_send_pulse(a, 10, 2, 2).unwrap();
    assert_eq!(s.msg_send_pulse(a, 10, 3, 3), Err(Errno::AGAIN));
    // Thread slots: 2 per process; this thread has one.
    let s2 = s.clone();
    let got = std::thread::spawn(move || s2.msg_send_pulse(b, 10, 1, 1))
        .join()
        .unwrap();
    assert_eq!(
        got,
        Err(Errno::AGAIN),
        "pool still full, but the thread got a slot"
    );
    // Thread slots: 2 per process. This thread holds one; a second thread takes the other and
    // keeps it while a third asks.
    let s3 = s.clone();
    let (took_tx, took_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let r = s3.set_priority(12);
        took_tx.send(r).unwrap();
        let _ = done_rx.recv();
    });
    assert_eq!(took_rx.recv().unwrap(), Ok(()));
    let s4 = s.clone();
    let third = std::thread::spawn(move || s4.set_priority(12))
        .join()
        .unwrap();
    assert_eq!(
        third,
        Err(Errno::AGAIN),
        "a third concurrent thread gets no slot"
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    let s5 = s.clone();
    let again = std::thread::spawn(move || s5.set_priority(12))
        .join()
        .unwrap();
    assert_eq!(again, Ok(()), "the slot came back when its thread exited");
}

#[test]
fn channel_flags_and_connection_info_errors() {
    let ts = TestSystem::new("err-flags", small_limits());
    let s = &ts.sys;
    let death = s.channel_create(chf::COID_DISCONNECT).unwrap();
    assert_eq!(
        s.channel_create(chf::THREAD_DEATH),
        Err(Errno::BUSY),
        "one death channel per process"
    );
    assert_eq!(
        s.channel_create(0xFFFF_0000),
        Ok(Chid(2)),
        "unknown flag bits are accepted"
    );
    s.channel_destroy(death).unwrap();
    assert!(
        s.channel_create(chf::THREAD_DEATH).is_ok(),
        "a new death channel after the old one is gone"
    );
    let chid = s.channel_create(chf::DISCONNECT).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let info = s.connect_server_info(Pid(0), coid).unwrap();
    assert_eq!(
        s.connect_client_info(Scoid(info.scoid)).unwrap().pid,
        s.pid().0
    );
    assert_eq!(
        s.connect_client_info(Scoid(info.scoid & !SIDE_CHANNEL)),
        Err(Errno::INVAL)
    );
    assert_eq!(s.connect_client_info(Scoid(-1)).unwrap().pid, s.pid().0);
    assert_eq!(
        s.scoid_detach(Scoid(info.scoid)),
        Err(Errno::INVAL),
        "links remain"
    );
    assert_eq!(
        s.connect_flags(Pid(0), coid, cof::CLOEXEC, cof::CLOEXEC),
        Ok(0)
    );
    assert_eq!(
        s.connect_flags(Pid(0), coid, cof::CLOEXEC, 0),
        Ok(cof::CLOEXEC)
    );
    // The next higher connection is reported for a free number; none left gives EINVAL.
    assert_eq!(s.connect_server_info(Pid(0), Coid(0)).unwrap().coid, coid.0);
    assert_eq!(s.connect_server_info(Pid(0), Coid(1)), Err(Errno::INVAL));
    s.connect_detach(coid).unwrap();
    let mut buf = [0u8; 16];
    match s.msg_receive(chid, &mut buf).unwrap() {
        Received::Pulse(p) => {
            assert_eq!(p.code, kernel_sim::pulse_code::DISCONNECT);
            assert_eq!(p.scoid, info.scoid);
        }
        other => panic!("expected a DISCONNECT pulse, got {other:?}"),
    }
    assert_eq!(s.scoid_detach(Scoid(info.scoid)), Ok(()));
    assert_eq!(s.scoid_detach(Scoid(info.scoid)), Err(Errno::INVAL));
}

#[test]
fn a_pulse_into_a_short_buffer_gives_efault_and_is_lost() {
    let ts = TestSystem::new("err-efault", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    s.msg_send_pulse(coid, -1, 5, 55).unwrap();
    assert_eq!(s.msg_receive(chid, &mut [0u8; 15]), Err(Errno::FAULT));
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        0,
        "the pulse is gone"
    );
    s.msg_send_pulse(coid, 266, 6, 66).unwrap(); // 266 & 0xFF = 10
    let mut buf = [0u8; 16];
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.value, p.priority), (6, 66, 10));
    assert_eq!(
        kernel_sim::Pulse::from_bytes(&buf).map(|q| (q.code, q.value)),
        Some((6, 66))
    );
    assert_eq!(
        s.msg_send_pulse(coid, 256, 1, 1),
        Err(Errno::INVAL),
        "256 cuts to 0"
    );
}

#[test]
fn destroying_a_channel_fails_its_blocked_senders_with_esrch() {
    let _w = Watchdog::new("destroy_wakes", 60);
    let ts = TestSystem::new("err-destroy", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let me = s.pid().0.to_string();
    let chid_s = chid.0.to_string();
    // One client REPLY-blocked (received), one SEND-blocked (queued).
    let replied = qsim_tests::send_one(HELPER, &ts.name, &me, &chid_s, 8, 8, 10);
    let mut buf = [0u8; 8];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    let queued = qsim_tests::send_one(HELPER, &ts.name, &me, &chid_s, 8, 8, 10);
    queued.expect("SENDING ");
    while s.channel_stats(chid).unwrap().queued == 0 {
        std::thread::yield_now();
    }
    // And a receiver of ours blocked on it.
    let s2 = s.clone();
    let recv = std::thread::spawn(move || s2.msg_receive(chid, &mut [0u8; 16]).map(|_| ()));
    // The queued sender is handed to the new receiver unless we destroy first; wait until either
    // the receiver is blocked or it took the message.
    loop {
        let st = s.channel_stats(chid).unwrap();
        if st.receivers == 1 || st.queued == 0 {
            break;
        }
        std::thread::yield_now();
    }
    s.channel_destroy(chid).unwrap();
    assert_eq!(replied.expect("ERR ")[0], "ESRCH");
    let r = recv.join().unwrap();
    if r.is_ok() {
        // The receiver took the queued message before the destroy: that client is REPLY-blocked
        // and gets ESRCH too.
        assert_eq!(queued.expect("ERR ")[0], "ESRCH");
    } else {
        assert_eq!(r, Err(Errno::SRCH));
        assert_eq!(queued.expect("ERR ")[0], "ESRCH");
    }
    assert_eq!(s.msg_reply(rcvid, 0, b""), Err(Errno::SRCH));
}

#[test]
fn msg_receive_pulse_takes_pulses_and_leaves_messages_queued() {
    let _w = Watchdog::new("receive_pulse", 60);
    let ts = TestSystem::new("err-rpulse", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let client = qsim_tests::send_one(
        HELPER,
        &ts.name,
        &s.pid().0.to_string(),
        &chid.0.to_string(),
        8,
        8,
        30,
    );
    client.expect("SENDING ");
    while s.channel_stats(chid).unwrap().queued == 0 {
        std::thread::yield_now();
    }
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    s.msg_send_pulse(coid, 1, 9, 99).unwrap();
    let p = s.msg_receive_pulse(chid).unwrap();
    assert_eq!(
        (p.code, p.value),
        (9, 99),
        "the low-priority pulse, behind a priority-30 message"
    );
    let mut buf = [0u8; 8];
    let Received::Message { rcvid, info } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    assert_eq!(info.priority, 30);
    s.msg_reply(rcvid, 3, b"").unwrap();
    assert_eq!(client.expect("STATUS ")[0], "3");
}

#[test]
fn a_pulse_goes_to_a_msg_receive_waiter_before_a_newer_msg_receive_pulse_waiter() {
    let _w = Watchdog::new("pulse_waiters", 60);
    let ts = TestSystem::new("err-pwait", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let s1 = s.clone();
    let plain = std::thread::spawn(move || {
        matches!(s1.msg_receive(chid, &mut [0u8; 16]), Ok(Received::Pulse(_)))
    });
    while s.channel_stats(chid).unwrap().receivers < 1 {
        std::thread::yield_now();
    }
    let s2 = s.clone();
    let pulse_only = std::thread::spawn(move || s2.msg_receive_pulse(chid).map(|p| p.code));
    while s.channel_stats(chid).unwrap().receivers < 2 {
        std::thread::yield_now();
    }
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    s.msg_send_pulse(coid, 10, 1, 0).unwrap();
    assert!(
        plain.join().unwrap(),
        "the MsgReceive waiter took it, though it waited first"
    );
    s.msg_send_pulse(coid, 10, 2, 0).unwrap();
    assert_eq!(pulse_only.join().unwrap(), Ok(2));
}
