//! The example resource managers as a user runs them: each server and its client as separate
//! processes (`qsim run ...`), results checked on both sides (the client's output and the
//! server's journal), plus what the framework promises: per-open offsets kept apart, close
//! handlers for a client that dies with files open, malformed messages answered with errors,
//! and a server that restarts taking its path back.

use kernel_sim::iomsg::{self, dcmd};
use kernel_sim::{Chid, Coid, Errno, Pid, System};
use qsim_tests::{small_limits, Helper, Scratch, TestSystem};
use resmgr_examples::examples::counter;
use resmgr_examples::journal::{Journal, Record};
use std::io::SeekFrom;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const QSIM: &str = env!("CARGO_BIN_EXE_qsim");

/// Starts `qsim run <example> --system <sys> <args>` and waits for its "serves" line.
fn server(ts: &TestSystem, example: &str, args: &[&str]) -> Helper {
    let h = Helper::spawn_cmd(
        Command::new(QSIM)
            .args(["run", example, "--system", &ts.name, "--exit-on-eof"])
            .args(args),
    );
    let line = h.line("the server's ready line");
    assert!(line.contains(" serves "), "{line}");
    h
}

/// Runs a client to completion; its stdout lines.
fn client(ts: &TestSystem, example: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(QSIM)
        .args(["run", example, "--system", &ts.name])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{example} failed");
    text.lines().map(str::to_owned).collect()
}

fn records(path: &Path) -> Vec<Record> {
    Journal::read(path).unwrap_or_default()
}

/// Waits (on the journal's content, up to a generous bound) until `pred` holds.
fn wait_journal(path: &Path, what: &str, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = records(path);
        if pred(&r) {
            return r;
        }
        assert!(
            Instant::now() < end,
            "the journal never showed {what}: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field<'r>(r: &'r Record, k: &str) -> &'r str {
    r.get(k).unwrap_or("")
}

#[test]
fn null_and_zero_devices_serve_their_client() {
    let ts = TestSystem::new("rm-devices", small_limits());
    let dir = Scratch::new("rm-devices");
    let j = dir.path("devices.journal");
    let _srv = server(&ts, "devices-server", &["--journal", j.to_str().unwrap()]);
    let out = client(&ts, "devices-client", &["--bytes", "5000"]);
    assert!(
        out.iter()
            .any(|l| l.contains("read 5000 bytes from /dev/zero (all zero: true)")),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.contains("wrote 5000 bytes to /dev/null, read back 0 bytes")),
        "{out:?}"
    );
    // The server's side: what it handled, in order.
    let r = records(&j);
    let ops: Vec<String> = r
        .iter()
        .map(|r| format!("{} {} {}", r.op, field(r, "mount"), field(r, "n")))
        .collect();
    assert_eq!(
        ops,
        [
            "open /dev/zero ",
            "read  5000",
            "close  ",
            "open /dev/null ",
            "write  5000",
            "read  0",
            "close  ",
        ],
        "{r:#?}"
    );
}

#[test]
fn counter_devctl_reads_adds_resets_and_survives_a_restart() {
    let ts = TestSystem::new("rm-counter", small_limits());
    let dir = Scratch::new("rm-counter");
    let j = dir.path("counter.journal");
    let js = j.to_str().unwrap();
    let mut srv = server(&ts, "counter-server", &["--journal", js]);
    let out = client(
        &ts,
        "counter-client",
        &[
            "get", "add:5", "add:7", "cat", "bogus", "reset", "add:30", "get",
        ],
    );
    let want = [
        "counter-client: get 0",
        "counter-client: add 5 id 1 -> 5",
        "counter-client: add 7 id 2 -> 12",
        "counter-client: cat 12",
        "counter-client: bogus failed: ENOTTY: Inappropriate ioctl for device (os error 25)",
        "counter-client: reset",
        "counter-client: add 30 id 3 -> 30",
        "counter-client: get 30",
    ];
    assert_eq!(out, want);
    let adds: Vec<(String, String)> = records(&j)
        .iter()
        .filter(|r| r.op == "counter" && field(r, "op") == "add")
        .map(|r| (field(r, "id").to_owned(), field(r, "value").to_owned()))
        .collect();
    assert_eq!(
        adds,
        [("1", "5"), ("2", "12"), ("3", "30")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Killed and restarted, the server takes its path back and its value from the journal.
    srv.kill();
    let _srv2 = server(&ts, "counter-server", &["--journal", js]);
    let out = client(&ts, "counter-client", &["--first-id", "4", "get", "add:1"]);
    assert_eq!(
        out,
        ["counter-client: get 30", "counter-client: add 1 id 4 -> 31"]
    );
}

fn write_file(dir: &Scratch, name: &str, content: &[u8]) {
    std::fs::write(dir.path(name), content).unwrap();
}

const TEXT: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

#[test]
fn file_server_reads_seeks_and_keeps_each_open_offset_apart() {
    let ts = TestSystem::new("rm-files", small_limits());
    let dir = Scratch::new("rm-files");
    write_file(&dir, "abc.txt", TEXT);
    let j = dir.path("files.journal");
    let root = dir.0.to_str().unwrap();
    let _srv = server(
        &ts,
        "file-server",
        &[
            "--root",
            root,
            "--journal",
            j.to_str().unwrap(),
            "--threads",
            "2",
        ],
    );
    // A client process: seek, then read in chunks to the end.
    let out = client(
        &ts,
        "file-client",
        &["--seek", "10", "--chunk", "20", "/files/abc.txt"],
    );
    assert_eq!(
        out[1..],
        [
            "file-client: seek to 10",
            "file-client: read 20: abcdefghijklmnopqrst",
            "file-client: read 20: uvwxyzABCDEFGHIJKLMN",
            "file-client: read 12: OPQRSTUVWXYZ",
            "file-client: end of file after 52 bytes",
        ]
    );
    // Two opens (this test process as a second client), reads interleaved: each keeps its own
    // offset.
    let sys = &ts.sys;
    let a = sys.open("/files/abc.txt", libc::O_RDONLY).unwrap();
    let b = sys.open("/files/./abc.txt", libc::O_RDONLY).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(sys.read(a, &mut buf), Ok(10));
    assert_eq!(&buf, b"0123456789");
    assert_eq!(sys.read(b, &mut buf[..4]), Ok(4));
    assert_eq!(&buf[..4], b"0123");
    assert_eq!(sys.read(a, &mut buf[..3]), Ok(3));
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(sys.lseek(b, SeekFrom::End(-2)), Ok(60));
    assert_eq!(sys.read(b, &mut buf), Ok(2));
    assert_eq!(&buf[..2], b"YZ");
    assert_eq!(sys.lseek(a, SeekFrom::Current(0)), Ok(13));
    assert_eq!(sys.lseek(a, SeekFrom::Current(-14)), Err(Errno::INVAL));
    // A dup shares the open (and so its offset), as POSIX says.
    let a2 = sys.dup(a).unwrap();
    sys.close(a).unwrap();
    assert_eq!(sys.read(a2, &mut buf[..1]), Ok(1));
    assert_eq!(buf[0], b'd');
    // Access is checked: this open is read-only.
    assert_eq!(sys.write(a2, b"x"), Err(Errno::BADF));
    sys.close(a2).unwrap();
    sys.close(b).unwrap();
    // No such file: the server's ENOENT; a directory: EISDIR.
    assert_eq!(sys.open("/files/nope", libc::O_RDONLY), Err(Errno::NOENT));
    assert_eq!(sys.open("/files", libc::O_RDONLY), Err(Errno::ISDIR));
    assert_eq!(sys.open("/files/../etc", libc::O_RDONLY), Err(Errno::NOENT));
    // The journal has each open's reads at its own offsets.
    let r = records(&j);
    let me = std::process::id().to_string();
    let mine: Vec<String> = r
        .iter()
        .filter(|r| field(r, "pid") == me && r.op == "read")
        .map(|r| {
            format!(
                "{}@{}+{}",
                field(r, "ocb"),
                field(r, "offset"),
                field(r, "n")
            )
        })
        .collect();
    let (oa, ob) = {
        let opens: Vec<&Record> = r
            .iter()
            .filter(|r| field(r, "pid") == me && r.op == "open")
            .collect();
        (field(opens[0], "ocb"), field(opens[1], "ocb"))
    };
    assert_eq!(
        mine,
        [
            format!("{oa}@0+10"),
            format!("{ob}@0+4"),
            format!("{oa}@10+3"),
            format!("{ob}@60+2"),
            format!("{oa}@13+1"),
        ]
    );
    assert!(r
        .iter()
        .any(|r| r.op == "dup" && field(r, "pid") == me && field(r, "ocb") == oa));
}

#[test]
fn file_server_writes_create_and_append() {
    // Messages up to 256 KiB, so a write can be longer than the framework's 64 KiB receive
    // buffer and the rest has to be fetched with msg_read.
    let ts = TestSystem::new(
        "rm-fwrite",
        kernel_sim::Limits {
            max_msg_size: 256 * 1024,
            ..small_limits()
        },
    );
    let dir = Scratch::new("rm-fwrite");
    let _srv = server(&ts, "file-server", &["--root", dir.0.to_str().unwrap()]);
    let sys = &ts.sys;
    let fd = sys
        .open("/files/new.txt", libc::O_WRONLY | libc::O_CREAT)
        .unwrap();
    assert_eq!(sys.write(fd, b"hello "), Ok(6));
    assert_eq!(sys.read(fd, &mut [0u8; 4]), Err(Errno::BADF));
    sys.close(fd).unwrap();
    let fd = sys
        .open("/files/new.txt", libc::O_WRONLY | libc::O_APPEND)
        .unwrap();
    // Longer than the server's receive buffer: the rest is fetched with msg_read.
    let big = vec![b'x'; 200_000];
    assert_eq!(sys.write(fd, &big), Ok(200_000));
    sys.close(fd).unwrap();
    let on_disk = std::fs::read(dir.path("new.txt")).unwrap();
    assert_eq!(on_disk.len(), 200_006);
    assert!(on_disk.starts_with(b"hello xxx"));
    // A read asking for more than a reply can carry is cut to what the client can take,
    // rather than leaving the client without an answer.
    let fd = sys.open("/files/new.txt", libc::O_RDONLY).unwrap();
    let mut buf = vec![0u8; 150_000];
    let raw = iomsg::io_read(1_000_000);
    assert_eq!(sys.msg_send(fd, &raw, &mut buf), Ok(150_000));
    assert_eq!(&buf[..6], b"hello ");
    sys.close(fd).unwrap();
}

#[test]
fn a_client_killed_with_files_open_gets_them_closed_on_the_server() {
    let ts = TestSystem::new("rm-death", small_limits());
    let dir = Scratch::new("rm-death");
    write_file(&dir, "abc.txt", TEXT);
    let j = dir.path("files.journal");
    let _srv = server(
        &ts,
        "file-server",
        &[
            "--root",
            dir.0.to_str().unwrap(),
            "--journal",
            j.to_str().unwrap(),
        ],
    );
    let mut c = Helper::spawn_cmd(Command::new(QSIM).args([
        "run",
        "file-client",
        "--system",
        &ts.name,
        "--reads",
        "1",
        "--hold",
        "/files/abc.txt",
    ]));
    c.expect("file-client: holding the file open");
    let pid = c.pid.to_string();
    let opened = records(&j);
    assert!(opened
        .iter()
        .any(|r| r.op == "open" && field(r, "pid") == pid));
    c.kill();
    let r = wait_journal(&j, "the dead client's close", |r| {
        r.iter().any(|r| r.op == "close" && field(r, "pid") == pid)
    });
    let close = r
        .iter()
        .find(|r| r.op == "close" && field(r, "pid") == pid)
        .unwrap();
    assert_eq!(field(close, "why"), "disconnect");
}

/// Connects straight to the server's channel (no `open`), as a hostile or broken client would.
fn raw_connection(sys: &System, path: &str) -> Coid {
    let t = sys.path_resolve(path).unwrap();
    sys.connect_attach(0, Pid(t[0].pid), Chid(t[0].chid), 0, 0)
        .unwrap()
}

#[test]
fn malformed_messages_get_error_replies_and_the_server_keeps_serving() {
    let ts = TestSystem::new("rm-malformed", small_limits());
    let dir = Scratch::new("rm-malformed");
    write_file(&dir, "abc.txt", TEXT);
    let _srv = server(&ts, "file-server", &["--root", dir.0.to_str().unwrap()]);
    let sys = &ts.sys;
    let raw = raw_connection(sys, "/files/abc.txt");
    let send = |m: &[u8]| sys.msg_send(raw, m, &mut [0u8; 64]);
    // No type at all.
    assert_eq!(send(&[0x01]), Err(Errno::BADMSG));
    // A read header cut short.
    assert_eq!(send(&iomsg::io_read(4)[..10]), Err(Errno::BADMSG));
    // A combine_len that lies.
    let mut m = iomsg::io_read(4);
    m[2] = 40;
    assert_eq!(send(&m), Err(Errno::BADMSG));
    // A write that promises more data than it carries.
    let mut w = iomsg::io_write(100).to_vec();
    w.extend_from_slice(b"short");
    assert_eq!(send(&w), Err(Errno::BADMSG));
    // A negative count.
    assert_eq!(send(&iomsg::io_read(u32::MAX)), Err(Errno::INVAL));
    // An _IO_CONNECT whose path length lies.
    let mut c = iomsg::IoConnect {
        subtype: iomsg::IO_CONNECT_OPEN,
        file_type: iomsg::FTYPE_ANY,
        handle: 0,
        ioflag: 1,
        mode: 0,
        path: "abc.txt".into(),
    }
    .encode();
    c[34] = 200;
    assert_eq!(send(&c), Err(Errno::BADMSG));
    // Well-formed I/O on a connection that never opened anything: EBADF.
    assert_eq!(send(&iomsg::io_read(4)), Err(Errno::BADF));
    assert_eq!(send(&iomsg::io_close()), Err(Errno::BADF));
    assert_eq!(send(&[0x04, 0x01, 4, 0]), Err(Errno::BADF));
    // A server-defined type the file server does not know.
    assert_eq!(send(&[0x00, 0x03, 0, 0]), Err(Errno::NOSYS));
    // An open for an unknown registration.
    let mut c2 = iomsg::IoConnect::decode(&{
        let mut c = c.clone();
        c[34] = 8;
        c
    })
    .unwrap();
    c2.handle = 9999;
    assert_eq!(send(&c2.encode()), Err(Errno::NOENT));
    sys.connect_detach(raw).unwrap();
    // Still serving.
    let fd = sys.open("/files/abc.txt", libc::O_RDONLY).unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(sys.read(fd, &mut buf), Ok(5));
    assert_eq!(&buf, b"01234");
    // An I/O type the framework does not implement, on an open file: ENOSYS; devctl's ENOTTY.
    assert_eq!(
        sys.msg_send(fd, &[0x04, 0x01, 4, 0], &mut []),
        Err(Errno::NOSYS)
    );
    assert_eq!(
        sys.devctl(fd, dcmd::dion(dcmd::CLASS_MISC, 9), &mut []),
        Err(Errno::NOTTY)
    );
    let mut flags = [0u8; 4];
    assert_eq!(sys.devctl(fd, dcmd::ALL_GETFLAGS, &mut flags), Ok(0));
    assert_eq!(i32::from_le_bytes(flags), libc::O_RDONLY);
    sys.close(fd).unwrap();
}

#[test]
fn a_path_without_a_server_is_enoent_and_a_restarted_server_takes_it_back() {
    let ts = TestSystem::new("rm-restart", small_limits());
    let dir = Scratch::new("rm-restart");
    write_file(&dir, "abc.txt", TEXT);
    let root = dir.0.to_str().unwrap();
    let sys = &ts.sys;
    assert_eq!(
        sys.open("/files/abc.txt", libc::O_RDONLY),
        Err(Errno::NOENT)
    );
    assert_eq!(sys.open("/dev/counter", libc::O_RDONLY), Err(Errno::NOENT));
    let mut first = server(&ts, "file-server", &["--root", root]);
    let fd = sys.open("/files/abc.txt", libc::O_RDONLY).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(sys.read(fd, &mut buf), Ok(8));
    first.kill();
    // The dead server's path is released (by whoever notices first: here the resolution).
    assert_eq!(sys.path_resolve("/files/abc.txt"), Ok(vec![]));
    // The old open is dead with its server.
    assert!(matches!(
        sys.read(fd, &mut buf),
        Err(Errno::BADF) | Err(Errno::SRCH)
    ));
    let _ = sys.close(fd);
    let second = server(&ts, "file-server", &["--root", root]);
    let targets = sys.path_resolve("/files/abc.txt").unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].pid, second.pid);
    let fd = sys.open("/files/abc.txt", libc::O_RDONLY).unwrap();
    assert_eq!(sys.lseek(fd, SeekFrom::Start(8)), Ok(8));
    assert_eq!(sys.read(fd, &mut buf), Ok(8));
    assert_eq!(&buf, b"89abcdef");
    assert_eq!(sys.connect_server_info(Pid(0), fd).unwrap().pid, second.pid);
    sys.close(fd).unwrap();
}

#[test]
fn counter_helpers_work_in_process_too() {
    let ts = TestSystem::new("rm-counter-lib", small_limits());
    let _srv = server(&ts, "counter-server", &[]);
    let sys = &ts.sys;
    let fd = sys.open("/dev/counter", libc::O_RDWR).unwrap();
    assert_eq!(counter::add(sys, fd, 2, 77), Ok(2));
    assert_eq!(counter::get(sys, fd), Ok(2));
    // A bad argument to a known command.
    assert_eq!(
        sys.devctl(fd, counter::DCMD_COUNTER_ADD, &mut [0u8; 4]),
        Err(Errno::INVAL)
    );
    sys.close(fd).unwrap();
    assert_eq!(
        sys.open("/dev/counter/x", libc::O_RDONLY),
        Err(Errno::NOENT)
    );
}
