//! The helper process of the cross-process tests. `kt-helper <mode> <system> [args...]`:
//!
//! - `server <system> <threads> <id>`: creates a channel, prints `READY <pid> <chid>`, and serves
//!   with `threads` receiving threads: checks every request's pattern, replies with the inverted
//!   bytes and status `id`, answers `_IO_*` bookkeeping, prints `DUP`/`CLOSE` when it gets those,
//!   and prints `PULSE <code> <value> <scoid>` for pulses.
//! - `idle-server <system>`: a channel nobody receives on; prints `READY <pid> <chid>`.
//! - `hold-server <system>`: receives one message, prints `HOLDING <rcvid>`, never replies.
//! - `name-server <system> <name>`: like `server` with one thread, on a `name_attach`ed channel.
//! - `client <system> <pid> <chid> <threads> <seed> <sizes...>`: each thread connects and sends
//!   one request of each size, checks the reply, and the process prints `OK <count>`.
//! - `send <system> <pid> <chid> <len> <rbytes> <priority>`: one request; prints
//!   `STATUS <status> <reply bytes>` or `ERR <errno>`.
//! - `crash-scenario <system> <pid> <chid> <die_at>`: connect, send, create a channel, pulse,
//!   receive, name attach/detach, detach, release; dies before arena write `die_at` (0: never)
//!   and prints `WRITES <n>` if it lives.
//! - `victim <system> <pid> <chid>`: sets up state for a cleaner, prints `READY`, waits.
//! - `cleaner <system> <victim> <die_at>`: cleans up after the dead victim, dying before write
//!   `die_at` (0: never); prints `CLEANED <bool> WRITES <n>`.
//! - `pound <system> <name> <seed>`: sends to the server named `name` for ever, reconnecting
//!   after EBADF/ESRCH; prints `PROGRESS <n>` every 20 replies, `BADERR ...` for other errors.
//! - `reply <system> <rcvid>`: tries to reply to the rcvid; prints `REPLY OK` or `REPLY <errno>`.
//! - `attach <system>` / `create <system>`: attaches to (or creates) the system, prints `OK` or
//!   `ERR <error>`.
//!
//! Every mode exits when its stdin reaches end-of-file (the test that started it is gone).
#![forbid(unsafe_code)]

use kernel_sim::{iomsg, Chid, Coid, Errno, Pid, Received, System, SystemBuilder};
use qsim_tests::{check_request, fill_request, reply_for};
use std::io::Read;
use std::sync::Arc;

fn die_with_parent() {
    std::thread::spawn(|| {
        let mut b = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut b) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    println!("STDIN {e}");
                    break;
                }
            }
        }
        println!("EXIT stdin closed");
        std::process::exit(0);
    });
}

fn attach(name: &str) -> System {
    SystemBuilder::new()
        .name(name)
        .attach()
        .unwrap_or_else(|e| {
            println!("ERR {e}");
            std::process::exit(2)
        })
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("kt-helper: bad or missing argument {i} in {args:?}");
        std::process::exit(2)
    })
}

fn serve(sys: &System, chid: Chid, id: i32) {
    let max = sys.limits().max_msg_size as usize;
    let mut buf = vec![0u8; max];
    loop {
        let r = match sys.msg_receive(chid, &mut buf) {
            Ok(r) => r,
            Err(e) => {
                println!("RECVERR {e:?}");
                return;
            }
        };
        match r {
            Received::Pulse(p) => {
                println!("PULSE {} {} {}", p.code, p.value, p.scoid);
                if p.code == kernel_sim::pulse_code::DISCONNECT {
                    let _ = sys.scoid_detach(kernel_sim::Scoid(p.scoid));
                }
            }
            Received::Message { rcvid, info } => {
                let msg = &buf[..info.msglen as usize];
                match iomsg::msg_type(msg) {
                    Some(iomsg::IO_DUP) => println!("DUP"),
                    Some(iomsg::IO_CLOSE) => println!("CLOSE"),
                    Some(iomsg::IO_CONNECT) => println!("CONNECT"),
                    _ => {}
                }
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info).unwrap_or(true) {
                    continue;
                }
                if info.msglen != info.srcmsglen || check_request(msg).is_none() {
                    println!("BADREQ len={} src={}", info.msglen, info.srcmsglen);
                    let _ = sys.msg_error(rcvid, Errno::IO);
                    continue;
                }
                let _ = sys.msg_reply(rcvid, id, &reply_for(msg));
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    die_with_parent();
    let mode = args.first().map(String::as_str).unwrap_or("");
    match mode {
        "server" => {
            let sys = attach(&args[1]);
            let threads: usize = arg(&args, 2);
            let id: i32 = arg(&args, 3);
            let chid = sys.channel_create(0).expect("channel_create");
            println!("READY {} {}", sys.pid().0, chid.0);
            let sys = Arc::new(sys);
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let s = sys.clone();
                    std::thread::spawn(move || serve(&s, chid, id))
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
        }
        "idle-server" => {
            // A channel nobody receives on: senders stay SEND-blocked.
            let sys = attach(&args[1]);
            let chid = sys.channel_create(0).expect("channel_create");
            println!("READY {} {}", sys.pid().0, chid.0);
            loop {
                std::thread::park();
            }
        }
        "hold-server" => {
            // Receives one message and never replies: its sender stays REPLY-blocked.
            let sys = attach(&args[1]);
            let chid = sys.channel_create(0).expect("channel_create");
            println!("READY {} {}", sys.pid().0, chid.0);
            let mut buf = vec![0u8; 256];
            if let Ok(Received::Message { rcvid, .. }) = sys.msg_receive(chid, &mut buf) {
                println!("HOLDING {}", rcvid.0);
            }
            loop {
                std::thread::park();
            }
        }
        "name-server" => {
            let sys = attach(&args[1]);
            let att = sys.name_attach(&args[2]).expect("name_attach");
            println!("READY {} {}", sys.pid().0, att.chid.0);
            serve(&sys, att.chid, 7);
        }
        "client" => {
            let sys = Arc::new(attach(&args[1]));
            let pid: i32 = arg(&args, 2);
            let chid: i32 = arg(&args, 3);
            let threads: u32 = arg(&args, 4);
            let seed: u32 = arg(&args, 5);
            let sizes: Vec<usize> = (6..args.len()).map(|i| arg(&args, i)).collect();
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let sys = sys.clone();
                    let sizes = sizes.clone();
                    std::thread::spawn(move || -> Result<u32, String> {
                        let coid = sys
                            .connect_attach(0, Pid(pid), Chid(chid), 0, 0)
                            .map_err(|e| format!("attach {e}"))?;
                        let mut count = 0;
                        for (k, &len) in sizes.iter().enumerate() {
                            let s = seed.wrapping_mul(1000).wrapping_add(t * 100 + k as u32 + 1);
                            let mut req = vec![0u8; len];
                            fill_request(s, &mut req);
                            let mut rep = vec![0u8; len];
                            sys.msg_send(coid, &req, &mut rep)
                                .map_err(|e| format!("send {len}: {e}"))?;
                            if rep != reply_for(&req) {
                                return Err(format!("reply mismatch at size {len}"));
                            }
                            count += 1;
                        }
                        Ok(count)
                    })
                })
                .collect();
            let mut total = 0;
            for h in hs {
                match h.join() {
                    Ok(Ok(n)) => total += n,
                    Ok(Err(e)) => {
                        println!("FAIL {e}");
                        std::process::exit(1);
                    }
                    Err(_) => {
                        println!("FAIL panic");
                        std::process::exit(1);
                    }
                }
            }
            println!("OK {total}");
        }
        "send" => {
            let sys = attach(&args[1]);
            let pid: i32 = arg(&args, 2);
            let chid: i32 = arg(&args, 3);
            let len: usize = arg(&args, 4);
            let rbytes: usize = arg(&args, 5);
            let prio: u8 = arg(&args, 6);
            sys.set_priority(prio).expect("set_priority");
            let coid = match sys.connect_attach(0, Pid(pid), Chid(chid), 0, 0) {
                Ok(c) => c,
                Err(e) => {
                    println!("ERR {e:?}");
                    return;
                }
            };
            println!("SENDING {}", coid.0);
            let mut req = vec![0u8; len];
            fill_request(prio as u32, &mut req);
            let mut rep = vec![0u8; rbytes];
            match sys.msg_send(Coid(coid.0), &req, &mut rep) {
                Ok(st) => println!(
                    "STATUS {st} {}",
                    rep.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
                Err(e) => println!("ERR {e:?}"),
            }
        }
        "crash-scenario" => {
            // The scripted scenario of the crash-point sweep: every arena write from `arm` on is
            // counted, and with die_at > 0 the process kills itself just before that write.
            let sys = SystemBuilder::new()
                .name(&args[1])
                .watcher(false)
                .attach()
                .expect("attach");
            let pid: i32 = arg(&args, 2);
            let chid: i32 = arg(&args, 3);
            let die_at: u64 = arg(&args, 4);
            kernel_sim::sync::crash::arm((die_at > 0).then_some(die_at));
            let coid = sys
                .connect_attach(0, Pid(pid), Chid(chid), 0, 0)
                .expect("connect");
            let mut req = [0u8; 64];
            fill_request(5, &mut req);
            let mut rep = [0u8; 64];
            sys.msg_send(coid, &req, &mut rep).expect("send");
            let own = sys
                .channel_create(kernel_sim::chf::DISCONNECT)
                .expect("channel");
            let me = sys
                .connect_attach(0, Pid(0), own, 0, 0)
                .expect("self connect");
            sys.msg_send_pulse(me, 10, 5, 55).expect("pulse");
            let mut buf = [0u8; 16];
            sys.msg_receive(own, &mut buf).expect("receive pulse");
            let att = sys.name_attach("crashy").expect("name_attach");
            sys.connect_detach(coid).expect("detach");
            sys.name_detach(att).expect("name_detach");
            sys.connect_detach(me).expect("detach self");
            drop(sys);
            println!("WRITES {}", kernel_sim::sync::crash::writes());
        }
        "victim" => {
            // State for a cleaner to tear down: a connection to the test's channel, a channel of
            // its own with a queued pulse, and a name. Then it waits to be killed.
            let sys = SystemBuilder::new()
                .name(&args[1])
                .watcher(false)
                .attach()
                .expect("attach");
            let pid: i32 = arg(&args, 2);
            let chid: i32 = arg(&args, 3);
            let _coid = sys
                .connect_attach(0, Pid(pid), Chid(chid), 0, 0)
                .expect("connect");
            let own = sys
                .channel_create(kernel_sim::chf::DISCONNECT)
                .expect("channel");
            let me = sys
                .connect_attach(0, Pid(0), own, 0, 0)
                .expect("self connect");
            sys.msg_send_pulse(me, 10, 5, 55).expect("pulse");
            let _att = sys.name_attach("victim").expect("name_attach");
            println!("READY {} {}", sys.pid().0, own.0);
            loop {
                std::thread::park();
            }
        }
        "cleaner" => {
            // Cleans up after a dead process, counting (and maybe dying at) its writes.
            let sys = SystemBuilder::new()
                .name(&args[1])
                .watcher(false)
                .attach()
                .expect("attach");
            let victim: i32 = arg(&args, 2);
            let die_at: u64 = arg(&args, 3);
            kernel_sim::sync::crash::arm((die_at > 0).then_some(die_at));
            let cleaned = sys.clean_up_after(Pid(victim));
            let n = kernel_sim::sync::crash::writes();
            kernel_sim::sync::crash::disarm();
            println!("CLEANED {cleaned} WRITES {n}");
        }
        "pound" => {
            // A client that keeps sending to the server named `name` across its deaths: on
            // EBADF/ESRCH it reconnects; any other error is reported as BADERR.
            let sys = attach(&args[1]);
            let name = args[2].clone();
            let seed: u32 = arg(&args, 3);
            let mut sent: u64 = 0;
            let mut coid = None;
            loop {
                let c = match coid {
                    Some(c) => c,
                    None => match sys.name_open(&name) {
                        Ok(c) => {
                            coid = Some(c);
                            c
                        }
                        Err(Errno::NOENT) => {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            continue;
                        }
                        Err(e) => {
                            println!("BADERR name_open {e:?}");
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            continue;
                        }
                    },
                };
                let mut req = [0u8; 32];
                fill_request(seed.wrapping_add(sent as u32), &mut req);
                let mut rep = [0u8; 32];
                match sys.msg_send(c, &req, &mut rep) {
                    Ok(_) if rep.to_vec() == reply_for(&req) => {
                        sent += 1;
                        if sent.is_multiple_of(20) {
                            println!("PROGRESS {sent}");
                        }
                    }
                    Ok(_) => println!("BADERR wrong reply"),
                    Err(Errno::BADF) | Err(Errno::SRCH) => {
                        let _ = sys.name_close(c);
                        coid = None;
                    }
                    Err(e) => println!("BADERR send {e:?}"),
                }
            }
        }
        "reply" => {
            // Tries to reply to a rcvid of another process's channel.
            let sys = attach(&args[1]);
            let rcvid: i32 = arg(&args, 2);
            match sys.msg_reply(kernel_sim::Rcvid(rcvid), 0, b"") {
                Ok(()) => println!("REPLY OK"),
                Err(e) => println!("REPLY {e:?}"),
            }
        }
        "attach" => match SystemBuilder::new().name(&args[1]).attach() {
            Ok(_) => println!("OK"),
            Err(e) => println!("ERR {e}"),
        },
        "create" => match SystemBuilder::new().name(&args[1]).create() {
            Ok(s) => {
                println!("OK");
                // Keep the file (the test inspects and removes it); release our registration.
                drop(s);
            }
            Err(e) => println!("ERR {e}"),
        },
        _ => {
            eprintln!("kt-helper: unknown mode {mode:?}");
            std::process::exit(2);
        }
    }
}
