//! The dispatch framework's own promises, in one process: timer and client pulses reach the
//! `pulse` handler, a pool of receiving threads stops on `stop`, a handler's journal record
//! precedes the framework's, and a server-defined message handler can take guaranteed
//! deliveries (ha-lib's gmd) sent to a path.

use kernel_sim::Limits;
use qsim_tests::{small_limits, TestSystem};
use resmgr_examples::resmgr::{Ctx, Dispatch, OpenRequest, ResourceManager};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Ticker {
    pulses: Mutex<Vec<(i8, i32)>>,
    seen: Condvar,
}

impl ResourceManager for Ticker {
    type Ocb = ();
    fn open(&self, _ctx: &Ctx<'_>, _req: &OpenRequest<'_>) -> Result<(), kernel_sim::Errno> {
        Ok(())
    }
    fn pulse(&self, _sys: &kernel_sim::System, p: &kernel_sim::Pulse) {
        self.pulses.lock().unwrap().push((p.code, p.value));
        self.seen.notify_all();
    }
}

impl Ticker {
    /// Waits until `pred` holds for the pulses seen (bounded, so a failure cannot hang).
    fn wait_for(&self, pred: impl Fn(&[(i8, i32)]) -> bool) -> Vec<(i8, i32)> {
        let g = self.pulses.lock().unwrap();
        let (g, res) = self
            .seen
            .wait_timeout_while(g, Duration::from_secs(30), |v| !pred(v))
            .unwrap();
        assert!(!res.timed_out(), "pulses seen: {:?}", *g);
        g.clone()
    }
}

#[test]
fn timers_and_client_pulses_reach_the_handler_and_stop_ends_the_pool() {
    let ts = TestSystem::new(
        "rm-framework",
        Limits {
            threads_per_process: 8,
            ..small_limits()
        },
    );
    let sys = &ts.sys;
    let mut d = Dispatch::new(sys, Ticker::default()).unwrap();
    d.attach("/tick", 0).unwrap();
    let timer = d.timer(5, 42, Duration::from_millis(1)).unwrap();
    assert_eq!(
        d.timer(
            resmgr_examples::resmgr::STOP_CODE,
            0,
            Duration::from_millis(1)
        ),
        Err(kernel_sim::Errno::INVAL)
    );
    let stats = std::thread::scope(|s| {
        let pool = s.spawn(|| d.run(3));
        d.resource()
            .wait_for(|v| v.iter().filter(|p| **p == (5, 42)).count() >= 3);
        sys.timer_delete(timer).unwrap();
        // A pulse from a client's open connection.
        let fd = sys.open("/tick", libc::O_RDONLY).unwrap();
        sys.msg_send_pulse(fd, -1, 9, 7).unwrap();
        d.resource().wait_for(|v| v.contains(&(9, 7)));
        // A client's pulse with the stop code is not obeyed: only the server's own connection
        // stops it. (The timer pulse after it shows the pool still serves.)
        sys.msg_send_pulse(fd, -1, resmgr_examples::resmgr::STOP_CODE, 0)
            .unwrap();
        sys.msg_send_pulse(fd, -1, 9, 8).unwrap();
        d.resource().wait_for(|v| v.contains(&(9, 8)));
        sys.close(fd).unwrap();
        d.stop().unwrap();
        pool.join().unwrap().unwrap()
    });
    assert_eq!((stats.opens, stats.closes), (1, 1));
}

#[test]
fn name_open_on_a_dispatch_with_paths_needs_no_open_handler() {
    struct Refuse;
    impl ResourceManager for Refuse {
        type Ocb = ();
        fn open(&self, _: &Ctx<'_>, _: &OpenRequest<'_>) -> Result<(), kernel_sim::Errno> {
            Err(kernel_sim::Errno::ACCES)
        }
    }
    let ts = TestSystem::new("rm-name-open", small_limits());
    let sys = &ts.sys;
    let mut d = Dispatch::new(sys, Refuse).unwrap();
    // The path takes the first registration slot (handle 0), as name_open's handle is 0.
    d.attach("/refuse", 0).unwrap();
    d.attach_name("svc").unwrap();
    std::thread::scope(|s| {
        let pool = s.spawn(|| d.run(1));
        let c = sys.name_open("svc").unwrap();
        sys.name_close(c).unwrap();
        assert_eq!(
            sys.open("/refuse", libc::O_RDONLY),
            Err(kernel_sim::Errno::ACCES)
        );
        d.stop().unwrap();
        pool.join().unwrap().unwrap();
    });
}

#[test]
fn a_resource_manager_takes_guaranteed_deliveries_on_a_path() {
    use ha_lib::gmd::{wire, Accepted, Delivery, GmdConfig, GmdConn, GmdReceiver, Target};
    // The server side in the framework: a server-defined message handler.
    struct Inbox(Mutex<GmdReceiver>);
    impl ResourceManager for Inbox {
        type Ocb = ();
        fn open(&self, _: &Ctx<'_>, _: &OpenRequest<'_>) -> Result<(), kernel_sim::Errno> {
            Ok(())
        }
        fn msg(&self, _: &Ctx<'_>, msg: &[u8], _: &mut Vec<u8>) -> Result<i32, kernel_sim::Errno> {
            let d = Delivery::decode(msg)?;
            match self.0.lock().unwrap().accept(&d) {
                Ok(Accepted::New) => Ok(wire::ack::NEW),
                Ok(Accepted::Duplicate) => Ok(wire::ack::DUPLICATE),
                Err(_) => Err(kernel_sim::Errno::AGAIN),
            }
        }
    }
    let ts = TestSystem::new("rm-gmd", small_limits());
    let scratch = qsim_tests::Scratch::new("rm-gmd");
    let log = scratch.path("inbox");
    let rx = GmdReceiver::open(&log, Default::default()).unwrap();
    let sys = &ts.sys;
    let mut d = Dispatch::new(sys, Inbox(Mutex::new(rx))).unwrap();
    d.attach("/dev/inbox", 0).unwrap();
    std::thread::scope(|s| {
        let pool = s.spawn(|| d.run(2));
        let conn = GmdConn::open(
            sys,
            Target::Path("/dev/inbox".into()),
            GmdConfig::new().sender("rm-test"),
        )
        .unwrap();
        for i in 0..50u32 {
            conn.send(&i.to_le_bytes()).unwrap();
        }
        assert!(conn.wait_idle(Some(Duration::from_secs(60))));
        assert_eq!(conn.counters().delivered, 50);
        conn.close().unwrap();
        d.stop().unwrap();
        let stats = pool.join().unwrap().unwrap();
        // The sender's connection was opened once and closed with _IO_CLOSE.
        assert_eq!((stats.opens, stats.closes), (1, 1));
    });
    let (seen, _) = GmdReceiver::read_log(&log).unwrap();
    assert_eq!(
        seen.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
}
