//! Messages between real processes: many clients and server threads, sizes up to 1 MiB, priority
//! order, `dup2` retargeting, short buffers and `msg_read`/`msg_write`.

use kernel_sim::{Chid, Coid, Errno, Limits, Pid, Received};
use qsim_tests::{
    check_request, fill_request, reply_for, small_limits, Helper, TestSystem, Watchdog,
};

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

fn ready(h: &Helper) -> (i32, i32) {
    let v = h.expect("READY ");
    (v[0].parse().unwrap(), v[1].parse().unwrap())
}

#[test]
fn three_client_processes_with_two_threads_each_reach_a_server_with_two_receivers() {
    let _w = Watchdog::new("three_client_processes", 120);
    let limits = Limits {
        max_processes: 6,
        threads_per_process: 3,
        max_msg_size: 1 << 20,
        max_coids: 16,
        ..Limits::default()
    };
    let ts = TestSystem::new("fanin", limits);
    let server = Helper::spawn(HELPER, &["server", &ts.name, "2", "1"]);
    let (pid, chid) = ready(&server);
    let sizes = ["0", "8", "4096", "65536", "1048576"];
    let (pid_s, chid_s) = (pid.to_string(), chid.to_string());
    let clients: Vec<Helper> = (1..=3)
        .map(|seed: u32| {
            let seed_s = seed.to_string();
            let mut args = vec!["client", &ts.name, &pid_s, &chid_s, "2", &seed_s];
            args.extend(sizes);
            Helper::spawn(HELPER, &args)
        })
        .collect();
    let mut total = 0;
    for c in &clients {
        let v = c.expect("OK ");
        total += v[0].parse::<u32>().unwrap();
    }
    println!(
        "3 clients x 2 threads x {} sizes: {total} round trips checked on both sides",
        sizes.len()
    );
    assert_eq!(total, 3 * 2 * sizes.len() as u32);
    for c in clients {
        assert_eq!(c.wait(), Some(0));
    }
}

#[test]
fn dup2_retargets_a_coid_at_a_second_server() {
    let _w = Watchdog::new("dup2_retargets", 60);
    let ts = TestSystem::new("dup2", small_limits());
    let s1 = Helper::spawn(HELPER, &["server", &ts.name, "1", "1"]);
    let s2 = Helper::spawn(HELPER, &["server", &ts.name, "1", "2"]);
    let (p1, c1) = ready(&s1);
    let (p2, c2) = ready(&s2);
    let sys = &ts.sys;
    let a = sys.connect_attach(0, Pid(p1), Chid(c1), 3, 0).unwrap();
    let b = sys.connect_attach(0, Pid(p2), Chid(c2), 0, 0).unwrap();
    assert_eq!((a, b), (Coid(3), Coid(0)));
    let mut req = [0u8; 16];
    fill_request(9, &mut req);
    let mut rep = [0u8; 16];
    assert_eq!(sys.msg_send(a, &req, &mut rep), Ok(1));
    assert_eq!(sys.dup2(b, a), Ok(a));
    // close(3) sent _IO_CLOSE to server 1; the dup sent _IO_DUP to server 2 on the new coid.
    s1.expect("CLOSE");
    s2.expect("DUP");
    assert_eq!(
        sys.msg_send(a, &req, &mut rep),
        Ok(2),
        "the next send on coid 3 reaches server 2"
    );
    assert_eq!(rep.to_vec(), reply_for(&req));
    let info = sys.connect_server_info(Pid(0), a).unwrap();
    assert_eq!((info.coid, info.pid, info.chid), (3, p2, c2));
    // dup2 onto itself returns it; onto a side channel or from a bad coid is EBADF.
    assert_eq!(sys.dup2(a, a), Ok(a));
    assert_eq!(
        sys.dup2(a, Coid(kernel_sim::SIDE_CHANNEL | 1)),
        Err(Errno::BADF)
    );
    assert_eq!(sys.dup2(Coid(9), Coid(1)), Err(Errno::BADF));
    // dup gives the lowest free coid and the server hears of it.
    assert_eq!(sys.dup(a), Ok(Coid(1)));
    s2.expect("DUP");
    assert_eq!(sys.close(Coid(1)), Ok(()));
    s2.expect("CLOSE");
    assert_eq!(sys.close(Coid(1)), Err(Errno::BADF));
}

#[test]
fn send_queue_is_served_in_priority_order_fifo_within_a_priority() {
    let _w = Watchdog::new("priority_order", 60);
    let ts = TestSystem::new("prio", small_limits());
    let sys = &ts.sys;
    let chid = sys.channel_create(0).unwrap();
    let me = sys.pid().0.to_string();
    let chid_s = chid.0.to_string();
    // Priorities in sending order; each client waits until the previous one is queued.
    let prios = [5u8, 20, 10, 20, 1];
    let mut clients = Vec::new();
    for (k, p) in prios.iter().enumerate() {
        let len = (8 + k).to_string();
        clients.push(Helper::spawn(
            HELPER,
            &["send", &ts.name, &me, &chid_s, &len, "64", &p.to_string()],
        ));
        clients[k].expect("SENDING ");
        while sys.channel_stats(chid).unwrap().queued < k as u32 + 1 {
            std::thread::yield_now();
        }
    }
    let mut order = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..prios.len() {
        let Received::Message { rcvid, info } = sys.msg_receive(chid, &mut buf).unwrap() else {
            panic!("pulse")
        };
        assert_eq!(info.srcmsglen, info.msglen);
        let msg = &buf[..info.msglen as usize];
        assert!(check_request(msg).is_some());
        order.push((info.priority, info.msglen));
        sys.msg_reply(rcvid, info.priority as i32, &reply_for(msg))
            .unwrap();
    }
    println!("served in order (priority, length): {order:?}");
    assert_eq!(order, vec![(20, 9), (20, 11), (10, 10), (5, 8), (1, 12)]);
    for (c, p) in clients.iter().zip(prios) {
        assert_eq!(c.expect("STATUS ")[0], p.to_string());
    }
}

#[test]
fn short_buffers_truncate_and_msg_read_and_msg_write_reach_the_rest() {
    let _w = Watchdog::new("short_buffers", 60);
    let ts = TestSystem::new("short", small_limits());
    let sys = &ts.sys;
    let chid = sys.channel_create(0).unwrap();
    let client = qsim_tests::send_one(
        HELPER,
        &ts.name,
        &sys.pid().0.to_string(),
        &chid.0.to_string(),
        1000,
        100,
        10,
    );
    let mut head = [0u8; 10];
    let Received::Message { rcvid, info } = sys.msg_receive(chid, &mut head).unwrap() else {
        panic!("pulse")
    };
    assert_eq!(
        (info.msglen, info.srcmsglen, info.dstmsglen),
        (10, 1000, 100)
    );
    let mut full = vec![0u8; 1000];
    full[..10].copy_from_slice(&head);
    assert_eq!(sys.msg_read(rcvid, &mut full[10..], 10), Ok(990));
    assert_eq!(
        sys.msg_read(rcvid, &mut [0u8; 8], 1000),
        Ok(0),
        "reading at the end gives 0 bytes"
    );
    assert!(
        check_request(&full).is_some(),
        "the whole message arrived in two parts"
    );
    // The client's reply buffer is 100 bytes: writes stop at its end.
    assert_eq!(sys.msg_write(rcvid, &[0xAB; 30], 90), Ok(10));
    assert_eq!(sys.msg_info(rcvid).unwrap().srcmsglen, 1000);
    sys.msg_reply(rcvid, 77, &[0x11; 200]).unwrap();
    let v = client.expect("STATUS ");
    assert_eq!(v[0], "77");
    assert_eq!(
        v[1],
        "11".repeat(100),
        "a 200-byte reply is cut to the client's 100 bytes"
    );
    // Reply twice: the second finds no REPLY-blocked client.
    assert_eq!(sys.msg_reply(rcvid, 0, b""), Err(Errno::SRCH));
    assert_eq!(sys.msg_error(rcvid, Errno::IO), Err(Errno::SRCH));
    assert_eq!(sys.msg_read(rcvid, &mut head, 0), Err(Errno::SRCH));
}

#[test]
fn msg_error_relays_the_errno_and_eok_means_success() {
    let _w = Watchdog::new("msg_error", 60);
    let ts = TestSystem::new("msgerr", small_limits());
    let sys = &ts.sys;
    let chid = sys.channel_create(0).unwrap();
    let me = sys.pid().0.to_string();
    let chid_s = chid.0.to_string();
    for (err, expect) in [
        (Errno::from_raw(123), "ERR Errno(123)"),
        (Errno::NOSYS, "ERR ENOSYS"),
        (Errno::OK, "STATUS 0"),
    ] {
        let client = qsim_tests::send_one(HELPER, &ts.name, &me, &chid_s, 8, 8, 10);
        let mut buf = [0u8; 8];
        let Received::Message { rcvid, .. } = sys.msg_receive(chid, &mut buf).unwrap() else {
            panic!("pulse")
        };
        sys.msg_error(rcvid, err).unwrap();
        let line = loop {
            let l = client.line(expect);
            if l.starts_with("ERR") || l.starts_with("STATUS") {
                break l;
            }
        };
        assert!(line.starts_with(expect), "{line} for {err:?}");
    }
}

#[test]
fn waiting_receivers_are_served_last_in_first_out() {
    let _w = Watchdog::new("lifo", 60);
    let ts = TestSystem::new("lifo", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let spawn_receiver = |tag: u8| {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            match s.msg_receive(chid, &mut buf).unwrap() {
                Received::Message { rcvid, .. } => {
                    s.msg_reply(rcvid, tag as i32, b"").unwrap();
                    Some(tag)
                }
                Received::Pulse(_) => None,
            }
        })
    };
    let first = spawn_receiver(1);
    while s.channel_stats(chid).unwrap().receivers < 1 {
        std::thread::yield_now();
    }
    let second = spawn_receiver(2);
    while s.channel_stats(chid).unwrap().receivers < 2 {
        std::thread::yield_now();
    }
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    assert_eq!(
        s.msg_send(coid, b"who?", &mut []),
        Ok(2),
        "the receiver that came last serves first"
    );
    assert_eq!(second.join().unwrap(), Some(2));
    s.msg_send_pulse(coid, 10, 1, 0).unwrap();
    assert_eq!(first.join().unwrap(), None);
}
