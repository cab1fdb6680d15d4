//! Names (`name_attach`/`name_open`) across processes, DISCONNECT pulses, and what a process
//! that exits normally gives back.

use kernel_sim::{pulse_code, Errno, Received};
use qsim_tests::{
    check_request, fill_request, reply_for, small_limits, Helper, TestSystem, Watchdog,
};

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

#[test]
fn a_client_finds_a_server_by_name_and_the_server_hears_it_leave() {
    let _w = Watchdog::new("names", 60);
    let ts = TestSystem::new("names", small_limits());
    let s = &ts.sys;
    assert_eq!(s.name_open("echo"), Err(Errno::NOENT));
    let server = Helper::spawn(HELPER, &["name-server", &ts.name, "echo"]);
    server.expect("READY ");
    let coid = s.name_open("echo").unwrap();
    assert!(
        coid.0 & kernel_sim::SIDE_CHANNEL != 0,
        "name_open gives a side-channel coid"
    );
    server.expect("CONNECT");
    let mut req = [0u8; 32];
    fill_request(4, &mut req);
    let mut rep = [0u8; 32];
    assert_eq!(s.msg_send(coid, &req, &mut rep), Ok(7));
    assert_eq!(rep.to_vec(), reply_for(&req));
    // A second attach of the same name fails; bad names are refused.
    assert_eq!(s.name_attach("echo").map(|_| ()), Err(Errno::EXIST));
    for bad in ["", "/abs", "a/../b", ".."] {
        assert_eq!(s.name_attach(bad).map(|_| ()), Err(Errno::INVAL), "{bad:?}");
        assert_eq!(s.name_open(bad), Err(Errno::INVAL), "{bad:?}");
    }
    assert_eq!(
        s.name_attach(&"n".repeat(200)).map(|_| ()),
        Err(Errno::NAMETOOLONG)
    );
    // name_close is a plain detach: the server gets the DISCONNECT pulse, no _IO_CLOSE.
    s.name_close(coid).unwrap();
    let v = server.expect("PULSE ");
    assert_eq!(v[0], pulse_code::DISCONNECT.to_string());
}

#[test]
fn a_process_that_exits_normally_releases_its_connections() {
    let _w = Watchdog::new("exit_releases", 60);
    let ts = TestSystem::new("exitrel", small_limits());
    let s = &ts.sys;
    let att = s.name_attach("svc").unwrap();
    let client = qsim_tests::send_one(
        HELPER,
        &ts.name,
        &s.pid().0.to_string(),
        &att.chid.0.to_string(),
        16,
        16,
        10,
    );
    let mut buf = [0u8; 64];
    let Received::Message { rcvid, info } = s.msg_receive(att.chid, &mut buf).unwrap() else {
        panic!("pulse")
    };
    assert!(check_request(&buf[..info.msglen as usize]).is_some());
    s.msg_reply(rcvid, 1, &[]).unwrap();
    assert_eq!(client.wait(), Some(0));
    // The client never detached: its exit released the connection, so we get the pulse.
    let Received::Pulse(p) = s.msg_receive(att.chid, &mut buf).unwrap() else {
        panic!("message")
    };
    assert_eq!(p.code, pulse_code::DISCONNECT);
    assert_eq!(p.scoid, info.scoid);
    s.scoid_detach(kernel_sim::Scoid(p.scoid)).unwrap();
    s.name_detach(att).unwrap();
    assert_eq!(s.name_open("svc"), Err(Errno::NOENT));
}

#[test]
fn a_client_waiting_for_a_name_is_woken_by_the_attach() {
    let _w = Watchdog::new("name_wait", 60);
    let ts = TestSystem::new("namewait", small_limits());
    let s = &ts.sys;
    assert_eq!(
        s.name_wait_open("never", Some(std::time::Duration::from_millis(1))),
        Err(Errno::TIMEDOUT)
    );
    let s1 = s.clone();
    let waiter = std::thread::spawn(move || s1.name_wait_open("later", None));
    let server = Helper::spawn(HELPER, &["name-server", &ts.name, "later"]);
    server.expect("READY ");
    let coid = waiter.join().unwrap().expect("woken by the attach");
    let mut req = [0u8; 16];
    fill_request(3, &mut req);
    let mut rep = [0u8; 16];
    assert_eq!(s.msg_send(coid, &req, &mut rep), Ok(7));
}
