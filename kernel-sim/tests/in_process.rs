//! Same-process checks of the calls (threads as clients and servers). The cross-process tests
//! live in the `qsim-tests` crate.

use kernel_sim::sync::atomic::{AtomicU32, Ordering};
use kernel_sim::{
    chf, Chid, Coid, Errno, Limits, Pid, Received, System, SystemBuilder, SIDE_CHANNEL,
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A system of its own, removed on drop.
struct Sys(System, String);

impl Drop for Sys {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.1);
    }
}

fn sys() -> Sys {
    let name = format!(
        "qsimtest-inproc-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let limits = Limits {
        max_processes: 4,
        threads_per_process: 8,
        max_coids: 16,
        max_msg_size: 4096,
        ..Limits::default()
    };
    let s = SystemBuilder::new()
        .name(&name)
        .limits(limits)
        .create()
        .expect("create");
    Sys(s, name)
}

#[test]
fn send_receive_reply_between_threads() {
    let s = sys();
    let chid = s.0.channel_create(0).unwrap();
    assert_eq!(chid, Chid(1));
    let server = s.0.clone();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            let Received::Message { rcvid, info } = server.msg_receive(chid, &mut buf).unwrap()
            else {
                panic!("pulse")
            };
            let n = info.msglen as usize;
            let mut rep = buf[..n].to_vec();
            rep.reverse();
            server.msg_reply(rcvid, n as i32, &rep).unwrap();
        }
    });
    let coid = s.0.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    assert_eq!(coid, Coid(0));
    for i in 0..100u32 {
        let msg = i.to_le_bytes();
        let mut rep = [0u8; 4];
        let st = s.0.msg_send(coid, &msg, &mut rep).unwrap();
        assert_eq!(st, 4);
        let mut exp = msg;
        exp.reverse();
        assert_eq!(rep, exp);
    }
    h.join().unwrap();
}

#[test]
fn bad_handles_give_qnx_errors() {
    let s = sys();
    assert_eq!(s.0.msg_send(Coid(3), b"x", &mut []), Err(Errno::BADF));
    assert_eq!(s.0.connect_detach(Coid(3)), Err(Errno::INVAL));
    assert_eq!(s.0.channel_destroy(Chid(7)), Err(Errno::INVAL));
    assert_eq!(
        s.0.msg_receive(Chid(7), &mut [0u8; 16]).unwrap_err(),
        Errno::SRCH
    );
    assert_eq!(
        s.0.msg_reply(kernel_sim::Rcvid(0x10001), 0, b""),
        Err(Errno::SRCH)
    );
    assert_eq!(
        s.0.connect_attach(0, Pid(0), Chid(1), 0, 0),
        Err(Errno::SRCH)
    );
    let chid = s.0.channel_create(chf::DISCONNECT).unwrap();
    assert_eq!(
        s.0.connect_attach(0, Pid(0), chid, 0, 0x8000),
        Err(Errno::INVAL)
    );
    let side =
        s.0.connect_attach(0, Pid(0), chid, SIDE_CHANNEL, 0)
            .unwrap();
    // chid 1, scoid 2, side coid 3
    assert_eq!(side, Coid(SIDE_CHANNEL | 3));
}

#[test]
fn pulses_are_received_in_priority_order() {
    let s = sys();
    let chid = s.0.channel_create(0).unwrap();
    let coid = s.0.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    s.0.msg_send_pulse(coid, 10, 1, 100).unwrap();
    s.0.msg_send_pulse(coid, 20, 2, 200).unwrap();
    s.0.msg_send_pulse(coid, 10, 3, 300).unwrap();
    let mut buf = [0u8; 16];
    let codes: Vec<i8> = (0..3)
        .map(|_| match s.0.msg_receive(chid, &mut buf).unwrap() {
            Received::Pulse(p) => p.code,
            _ => panic!("message"),
        })
        .collect();
    assert_eq!(codes, vec![2, 1, 3]);
    assert_eq!(s.0.msg_send_pulse(coid, 0, 1, 1), Err(Errno::INVAL));
}
