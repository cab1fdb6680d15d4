//! Detaching a coid under blocked threads, and `dup`/`dup2`/`close` against servers that refuse
//! or are gone.

use kernel_sim::{chf, iomsg, mi, pulse_code, Coid, Errno, Pid, Received};
use qsim_tests::{small_limits, Helper, TestSystem, Watchdog};

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

fn wait_queued(s: &kernel_sim::System, chid: kernel_sim::Chid, n: u32) {
    while s.channel_stats(chid).unwrap().queued < n {
        std::thread::yield_now();
    }
}

#[test]
fn detaching_a_coid_releases_other_threads_blocked_through_it_with_ebadf() {
    let _w = Watchdog::new("detach_releases", 60);
    let ts = TestSystem::new("conn-detach", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    // SEND-blocked.
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let s1 = s.clone();
    let sender = std::thread::spawn(move || s1.msg_send(coid, b"queued", &mut []));
    wait_queued(s, chid, 1);
    s.connect_detach(coid).unwrap();
    assert_eq!(sender.join().unwrap(), Err(Errno::BADF));
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        0,
        "it left the queue"
    );
    // REPLY-blocked, channel without _NTO_CHF_UNBLOCK.
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let s2 = s.clone();
    let sender = std::thread::spawn(move || s2.msg_send(coid, b"received", &mut []));
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    s.connect_detach(coid).unwrap();
    assert_eq!(sender.join().unwrap(), Err(Errno::BADF));
    assert_eq!(
        s.msg_reply(rcvid, 0, b""),
        Err(Errno::SRCH),
        "the client is no longer REPLY-blocked"
    );
}

#[test]
fn on_an_unblock_channel_a_detach_sends_an_unblock_pulse_and_the_reply_still_lands() {
    let _w = Watchdog::new("detach_unblock", 60);
    let ts = TestSystem::new("conn-unblock", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(chf::UNBLOCK | chf::DISCONNECT).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let s1 = s.clone();
    let sender = std::thread::spawn(move || s1.msg_send(coid, b"hold me", &mut []));
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    assert_eq!(s.msg_info(rcvid).unwrap().flags & mi::UNBLOCK_REQ, 0);
    s.connect_detach(coid).unwrap();
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.value), (pulse_code::UNBLOCK, rcvid.0));
    assert_eq!(
        s.msg_info(rcvid).unwrap().flags & mi::UNBLOCK_REQ,
        mi::UNBLOCK_REQ
    );
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        0,
        "the blocked thread still holds a link: no DISCONNECT yet"
    );
    s.msg_reply(rcvid, 5, b"").unwrap();
    assert_eq!(
        sender.join().unwrap(),
        Ok(5),
        "the client stayed blocked and got the reply"
    );
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!(
        p.code,
        pulse_code::DISCONNECT,
        "the DISCONNECT follows the reply"
    );
}

#[test]
fn an_early_reply_withdraws_the_queued_unblock_pulse() {
    let _w = Watchdog::new("withdraw_unblock", 60);
    let ts = TestSystem::new("conn-withdraw", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(chf::UNBLOCK).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let s1 = s.clone();
    let sender = std::thread::spawn(move || s1.msg_send(coid, b"x", &mut []));
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    s.connect_detach(coid).unwrap();
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        1,
        "the UNBLOCK pulse is queued"
    );
    s.msg_error(rcvid, Errno::INTR).unwrap();
    assert_eq!(sender.join().unwrap(), Err(Errno::INTR));
    assert_eq!(
        s.channel_stats(chid).unwrap().queued,
        0,
        "the reply took the pulse back"
    );
}

#[test]
fn dup_fails_with_the_servers_errno_and_leaves_no_coid() {
    let _w = Watchdog::new("dup_refused", 60);
    let ts = TestSystem::new("conn-dup", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let s1 = s.clone();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            match s1.msg_receive(chid, &mut buf) {
                Ok(Received::Message { rcvid, info }) => {
                    let t = iomsg::msg_type(&buf[..info.msglen as usize]);
                    if t == Some(iomsg::IO_DUP) {
                        assert_eq!(info.msglen, 60, "_io_dup is 60 bytes");
                        s1.msg_error(rcvid, Errno::PERM).unwrap();
                    } else {
                        s1.msg_reply(rcvid, 0, b"").unwrap();
                    }
                }
                Ok(Received::Pulse(_)) => return,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    assert_eq!(s.dup(coid), Err(Errno::PERM));
    assert_eq!(
        s.connect_server_info(Pid(0), Coid(1)),
        Err(Errno::INVAL),
        "the new coid was detached again"
    );
    assert_eq!(
        s.dup2(coid, Coid(4)),
        Err(Errno::BADF),
        "a rejected dup makes dup2 fail with EBADF"
    );
    assert_eq!(s.dup(Coid(kernel_sim::SIDE_CHANNEL | 1)), Err(Errno::BADF));
    assert_eq!(s.dup_from(coid, -1), Err(Errno::INVAL));
    s.msg_send_pulse(coid, 10, 1, 0).unwrap();
    server.join().unwrap();
}

#[test]
fn a_coid_whose_server_channel_is_gone_gives_esrch_to_dup_and_ebadf_to_dup2_and_close() {
    let _w = Watchdog::new("dup_dead", 60);
    let ts = TestSystem::new("conn-dead", small_limits());
    let s = &ts.sys;
    let server = Helper::spawn(HELPER, &["server", &ts.name, "1", "1"]);
    let v = server.expect("READY ");
    let (pid, chid): (i32, i32) = (v[0].parse().unwrap(), v[1].parse().unwrap());
    let coid = s
        .connect_attach(0, Pid(pid), kernel_sim::Chid(chid), 0, 0)
        .unwrap();
    let other = s
        .connect_attach(0, Pid(pid), kernel_sim::Chid(chid), 0, 0)
        .unwrap();
    // Make the server's channel go away: the helper exits normally (stdin closed).
    assert_eq!(server.wait(), Some(0));
    assert_eq!(s.msg_send(coid, b"x", &mut []), Err(Errno::BADF));
    assert_eq!(s.dup(coid), Err(Errno::SRCH));
    assert_eq!(s.dup2(coid, Coid(5)), Err(Errno::BADF));
    assert_eq!(
        s.close(other),
        Err(Errno::BADF),
        "a stale coid's close reports EBADF..."
    );
    assert_eq!(
        s.connect_detach(other),
        Err(Errno::INVAL),
        "...and frees it all the same"
    );
    assert_eq!(s.connect_detach(coid), Ok(()));
}
