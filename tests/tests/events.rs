//! `MsgDeliverEvent` (a server delivers a client's pulse event, resolved in the client's
//! process) and timers that deliver pulses.

use kernel_sim::{Chid, Coid, Errno, Pid, Received, SigEvent};
use qsim_tests::{small_limits, Helper, TestSystem, Watchdog};
use std::time::Duration;

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

#[test]
fn a_server_delivers_a_client_s_pulse_event_through_the_client_s_coid() {
    let _w = Watchdog::new("deliver_event", 60);
    let ts = TestSystem::new("events-deliver", small_limits());
    let s = &ts.sys;
    // The "client" here is a helper process; the event's coid is one of the helper's, not ours.
    let client = Helper::spawn(
        HELPER,
        &[
            "send",
            &ts.name,
            &s.pid().0.to_string(),
            "1",
            "8",
            "8",
            "10",
        ],
    );
    let chid = s.channel_create(0).unwrap();
    assert_eq!(chid, Chid(1));
    let coid_in_client: i32 = client.expect("SENDING ")[0].parse().unwrap();
    let mut buf = [0u8; 16];
    let Received::Message { rcvid, .. } = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    // Coid 0 in the client is its connection to our channel: the pulse comes back to us.
    let ev = SigEvent::Pulse {
        coid: Coid(coid_in_client),
        priority: -1,
        code: 9,
        value: 99,
    };
    s.msg_deliver_event(rcvid, &ev).unwrap();
    let bad = SigEvent::Pulse {
        coid: Coid(7),
        priority: -1,
        code: 9,
        value: 99,
    };
    assert_eq!(
        s.msg_deliver_event(rcvid, &bad),
        Err(Errno::SRCH),
        "no coid 7 in the client"
    );
    let zero = SigEvent::Pulse {
        coid: Coid(coid_in_client),
        priority: 0,
        code: 9,
        value: 99,
    };
    assert_eq!(s.msg_deliver_event(rcvid, &zero), Err(Errno::INVAL));
    assert_eq!(
        s.msg_deliver_event(kernel_sim::Rcvid(0x10005), &ev),
        Err(Errno::SRCH)
    );
    let Received::Pulse(p) = s.msg_receive(chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!((p.code, p.value, p.priority), (9, 99, 10));
    s.msg_reply(rcvid, 0, b"").unwrap();
    assert_eq!(client.expect("STATUS ")[0], "0");
}

#[test]
fn a_timer_delivers_pulses_once_and_periodically() {
    let _w = Watchdog::new("timers", 60);
    let ts = TestSystem::new("events-timer", small_limits());
    let s = &ts.sys;
    let chid = s.channel_create(0).unwrap();
    let coid = s.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    let once = s
        .timer_create(SigEvent::Pulse {
            coid,
            priority: 12,
            code: 3,
            value: 30,
        })
        .unwrap();
    let every = s
        .timer_create(SigEvent::Pulse {
            coid,
            priority: 11,
            code: 4,
            value: 40,
        })
        .unwrap();
    s.timer_settime(once, Some(Duration::from_millis(1)), None)
        .unwrap();
    s.timer_settime(
        every,
        Some(Duration::from_millis(1)),
        Some(Duration::from_millis(1)),
    )
    .unwrap();
    let mut buf = [0u8; 16];
    let (mut ones, mut periodic) = (0, 0);
    while periodic < 5 {
        match s.msg_receive(chid, &mut buf).unwrap() {
            Received::Pulse(p) if p.code == 3 => ones += 1,
            Received::Pulse(p) if p.code == 4 => periodic += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        ones, 1,
        "the one-shot timer fired once while the periodic one fired 5 times"
    );
    s.timer_delete(every).unwrap();
    assert_eq!(s.timer_delete(every), Err(Errno::INVAL));
    assert_eq!(s.timer_settime(every, None, None), Err(Errno::INVAL));
    s.timer_delete(once).unwrap();
}
