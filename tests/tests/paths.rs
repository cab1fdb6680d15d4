//! The path space: `resmgr_attach` ordering (QNX's rules for several servers at one
//! mountpoint, longest mountpoint first), `open` passing over a server that answers ENOENT,
//! the release of a channel's paths, the wait for a path, and the errors. Cross-process
//! behaviour (a dead server's paths, a restart) is in resmgr-examples' tests.

use kernel_sim::abi::resmgr_flag::{AFTER, BEFORE, DIR};
use kernel_sim::{iomsg, Chid, Errno, Received, System};
use qsim_tests::{small_limits, TestSystem};
use std::time::Duration;

fn chids(sys: &System, path: &str) -> Vec<i32> {
    sys.path_resolve(path)
        .unwrap()
        .iter()
        .map(|t| t.chid)
        .collect()
}

#[test]
fn registrations_at_one_mountpoint_follow_qnx_order() {
    let ts = TestSystem::new("paths-order", small_limits());
    let sys = &ts.sys;
    let ch: Vec<Chid> = (0..7).map(|_| sys.channel_create(0).unwrap()).collect();
    let c = |i: usize| ch[i].0;
    sys.resmgr_attach(ch[0], "/a", 0).unwrap();
    sys.resmgr_attach(ch[1], "/a", 0).unwrap();
    // Unflagged: the latest first.
    assert_eq!(chids(sys, "/a"), [c(1), c(0)]);
    sys.resmgr_attach(ch[2], "/a", BEFORE).unwrap();
    sys.resmgr_attach(ch[3], "/a", AFTER).unwrap();
    sys.resmgr_attach(ch[4], "/a", AFTER).unwrap();
    assert_eq!(chids(sys, "/a"), [c(2), c(1), c(0), c(4), c(3)]);
    // A later unflagged one goes ahead of the earlier unflagged, behind BEFORE.
    let late = sys.resmgr_attach(ch[5], "/a", 0).unwrap();
    assert_eq!(chids(sys, "/a"), [c(2), c(5), c(1), c(0), c(4), c(3)]);
    // A non-directory mountpoint covers only itself.
    assert!(chids(sys, "/a/b").is_empty());
    assert!(chids(sys, "/ab").is_empty());
    // Directories: the longest mountpoint first; the rest of the path is what the server gets.
    sys.resmgr_attach(ch[6], "/", DIR).unwrap();
    let t = sys.path_resolve("/a").unwrap();
    assert_eq!(t.last().unwrap().chid, c(6));
    assert_eq!(t.last().unwrap().rest, "a");
    assert_eq!(t[0].rest, "");
    let t = sys.path_resolve("/a/b/c").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].chid, t[0].rest.as_str()), (c(6), "a/b/c"));
    // Detach takes one registration out; twice is ENOENT.
    sys.resmgr_detach(late).unwrap();
    assert_eq!(sys.resmgr_detach(late), Err(Errno::NOENT));
    assert_eq!(chids(sys, "/a")[..2], [c(2), c(1)]);
    // Destroying a channel releases its paths.
    sys.channel_destroy(ch[2]).unwrap();
    assert_eq!(chids(sys, "/a")[0], c(1));
    // The introspection view shows paths with their flags.
    let snap = sys.snapshot();
    let dirs: Vec<_> = snap
        .names
        .iter()
        .filter(|n| n.is_path && n.flags == DIR)
        .map(|n| n.path.as_str())
        .collect();
    assert_eq!(dirs, ["/"]);
    assert!(snap.to_string().contains("path / -> "));
}

#[test]
fn attach_refuses_bad_paths_flags_and_channels() {
    let ts = TestSystem::new("paths-errors", small_limits());
    let sys = &ts.sys;
    let ch = sys.channel_create(0).unwrap();
    assert_eq!(sys.resmgr_attach(ch, "rel", 0), Err(Errno::INVAL));
    assert_eq!(
        sys.resmgr_attach(ch, "/dev/name/local/x", 0),
        Err(Errno::INVAL)
    );
    assert_eq!(sys.resmgr_attach(ch, "/x", 0x8000), Err(Errno::INVAL));
    assert_eq!(sys.resmgr_attach(Chid(99), "/x", 0), Err(Errno::INVAL));
    assert_eq!(sys.resmgr_attach(ch, "/x\0y", 0), Err(Errno::INVAL));
    let long = format!("/{}", "p".repeat(130));
    assert_eq!(sys.resmgr_attach(ch, &long, 0), Err(Errno::NAMETOOLONG));
    assert_eq!(sys.open(&long, libc::O_RDONLY), Err(Errno::NAMETOOLONG));
    assert_eq!(sys.open("", libc::O_RDONLY), Err(Errno::NOENT));
    // The table holds max_names (8) names and paths.
    for i in 0..8 {
        sys.resmgr_attach(ch, &format!("/p{i}"), 0).unwrap();
    }
    assert_eq!(sys.resmgr_attach(ch, "/p8", 0), Err(Errno::AGAIN));
    assert_eq!(sys.name_attach("full"), Err(Errno::AGAIN));
}

/// Serves `_IO_CONNECT` on `chid` answering `status` (0 or an errno), until `count` opens.
fn open_server(
    sys: System,
    chid: Chid,
    status: Errno,
    count: usize,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while seen.len() < count {
            let Ok(Received::Message { rcvid, info }) = sys.msg_receive(chid, &mut buf) else {
                continue;
            };
            let msg = &buf[..info.msglen as usize];
            match iomsg::IoConnect::decode(msg) {
                Ok(c) => {
                    seen.push(c.path);
                    let _ = sys.msg_error(rcvid, status);
                }
                Err(_) => {
                    let _ = sys.msg_reply(rcvid, 0, &[]);
                }
            }
        }
        seen
    })
}

#[test]
fn open_passes_over_a_server_that_answers_enoent() {
    let ts = TestSystem::new("paths-enoent", small_limits());
    let sys = &ts.sys;
    let old = sys.channel_create(0).unwrap();
    let new = sys.channel_create(0).unwrap();
    sys.resmgr_attach(old, "/svc", DIR).unwrap();
    sys.resmgr_attach(new, "/svc", DIR).unwrap();
    let t_new = open_server(sys.clone(), new, Errno::NOENT, 2);
    let t_old = open_server(sys.clone(), old, Errno::OK, 1);
    // The newer server is tried first; its ENOENT sends the client on to the older one.
    let fd = sys.open("/svc/thing", libc::O_RDONLY).unwrap();
    assert_eq!(
        sys.connect_server_info(kernel_sim::Pid(0), fd)
            .unwrap()
            .chid,
        old.0
    );
    assert_eq!(t_old.join().unwrap(), ["thing"]);
    // A path whose only server answers ENOENT is ENOENT.
    sys.resmgr_attach(new, "/other", 0).unwrap();
    assert_eq!(sys.open("/other", libc::O_RDONLY), Err(Errno::NOENT));
    assert_eq!(t_new.join().unwrap(), ["thing", ""]);
    let _ = sys.connect_detach(fd);
}

#[test]
fn path_wait_is_woken_by_the_attach() {
    let ts = TestSystem::new("paths-wait", small_limits());
    let sys = &ts.sys;
    assert_eq!(
        sys.path_wait("/late", Some(Duration::from_millis(10))),
        Err(Errno::TIMEDOUT)
    );
    let waiter = {
        let sys = sys.clone();
        std::thread::spawn(move || sys.path_wait("/late/x", None))
    };
    // The waiter may or may not be asleep yet: either way the attach ends its wait.
    let ch = sys.channel_create(0).unwrap();
    sys.resmgr_attach(ch, "/late", DIR).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(()));
}

#[test]
fn names_are_in_the_path_space_too() {
    let ts = TestSystem::new("paths-names", small_limits());
    let sys = &ts.sys;
    let att = sys.name_attach("svc").unwrap();
    let t = sys.path_resolve("/dev/name/local/svc").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].chid, att.chid.0);
    // A name matches exactly, never as a directory.
    assert!(sys
        .path_resolve("/dev/name/local/svc/x")
        .unwrap()
        .is_empty());
    let snap = sys.snapshot();
    assert!(snap.names.iter().any(|n| !n.is_path && n.path == att.path));
    sys.name_detach(att).unwrap();
    assert!(sys.path_resolve("/dev/name/local/svc").unwrap().is_empty());
}
