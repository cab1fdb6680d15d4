//! The targets of issue 7, checked against one run's medians. A target whose rows were not
//! measured (filtered out or failed) says so; none is loosened.

use super::idle::IdleCpu;
use super::Row;
use crate::process::PlacementKind::{self, Apart, Same};
use crate::summary::format_ns;

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Met.
    Met,
    /// Missed.
    Missed,
    /// Its rows were not measured.
    NotMeasured,
}

impl Verdict {
    /// `met`, `MISSED` or `not measured`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One target and how this run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The claim, as the issue words it.
    pub claim: String,
    /// Met, missed, or not measured.
    pub verdict: Verdict,
    /// The numbers behind the verdict.
    pub detail: String,
}

const KIB64: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

/// Checks every target of issue 7 against `rows` (and the idle measurement, if made).
pub fn evaluate(rows: &[Row], idle: Option<&IdleCpu>) -> Vec<Target> {
    let med = |name: &str, payload: usize, p: PlacementKind| {
        rows.iter()
            .find(|r| r.case.name == name && r.case.payload == payload && r.case.placement == p)
            .map(|r| r.median_ns)
    };
    let mut out = Vec::new();
    // `a` / `b` must be at most `limit`.
    let at_most =
        |claim: String, a: Option<(&str, f64)>, b: Option<(&str, f64)>, limit: f64| match (a, b) {
            (Some((an, a)), Some((bn, b))) if b > 0.0 => {
                let r = a / b;
                Target {
                    claim,
                    verdict: if r <= limit {
                        Verdict::Met
                    } else {
                        Verdict::Missed
                    },
                    detail: format!(
                        "{an} {} / {bn} {} = {r:.2} (limit {limit:.2})",
                        format_ns(a),
                        format_ns(b)
                    ),
                }
            }
            _ => Target {
                claim,
                verdict: Verdict::NotMeasured,
                detail: "a row is missing".to_owned(),
            },
        };
    let row = |name: &'static str, payload, p| med(name, payload, p).map(|m| (name, m));
    // `slow` / `fast` must be at least `times` (a speed-up, shown as one).
    let at_least = |claim: String,
                    slow: Option<(&str, f64)>,
                    fast: Option<(&str, f64)>,
                    times: f64| match (slow, fast) {
        (Some((sn, s)), Some((fname, f))) if f > 0.0 => {
            let r = s / f;
            Target {
                claim,
                verdict: if r >= times {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                detail: format!(
                    "{sn} {} / {fname} {} = {r:.2} (needs >= {times:.2})",
                    format_ns(s),
                    format_ns(f)
                ),
            }
        }
        _ => Target {
            claim,
            verdict: Verdict::NotMeasured,
            detail: "a row is missing".to_owned(),
        },
    };
    out.push(at_most(
        "msg_send 8 B apart <= 1.5 x spin_floor".into(),
        row("msg_send", 8, Apart),
        row("spin_floor", 8, Apart),
        1.5,
    ));
    for (peer, times) in [("iceoryx2", 5.0), ("pipe", 100.0), ("uds_stream", 100.0)] {
        out.push(at_least(
            format!("msg_send 8 B apart >= {times} x faster than {peer}"),
            row(peer, 8, Apart),
            row("msg_send", 8, Apart),
            times,
        ));
    }
    for p in [Apart, Same] {
        out.push(at_most(
            format!("msg_send_blocking 8 B {} <= 1.15 x futex_floor", p.as_str()),
            row("msg_send_blocking", 8, p),
            row("futex_floor", 8, p),
            1.15,
        ));
    }
    for peer in ["pipe", "uds_stream", "uds_seqpacket"] {
        out.push(at_most(
            format!("msg_send_blocking 8 B same beats {peer}"),
            row("msg_send_blocking", 8, Same),
            row(peer, 8, Same),
            1.0,
        ));
    }
    out.push(at_most(
        "same: adaptive msg_send 8 B <= 1.5 x msg_send_blocking".into(),
        row("msg_send", 8, Same),
        row("msg_send_blocking", 8, Same),
        1.5,
    ));
    for (payload, label, limit) in [(KIB64, "64 KiB", 1.15), (MIB, "1 MiB", 1.25)] {
        out.push(at_most(
            format!("{label}: msg_send apart <= {limit} x spin_floor"),
            row("msg_send", payload, Apart),
            row("spin_floor", payload, Apart),
            limit,
        ));
        for p in [Apart, Same] {
            out.push(at_most(
                format!(
                    "{label}: msg_send_blocking {} <= {limit} x futex_floor",
                    p.as_str()
                ),
                row("msg_send_blocking", payload, p),
                row("futex_floor", payload, p),
                limit,
            ));
        }
    }
    // Throughput rows give ns per round trip: 1.5 x the throughput is 1/1.5 x the time.
    out.push(at_least(
        "throughput blocking c4: 2 receivers >= 1.5 x 1 receiver".into(),
        row("throughput_blocking_c4_r1", 8, PlacementKind::None),
        row("throughput_blocking_c4_r2", 8, PlacementKind::None),
        1.5,
    ));
    // Against the msg_send runs interleaved with it, not the separate msg_send row.
    for p in [Apart, Same] {
        out.push(at_most(
            format!(
                "ha_msg_send 8 B {} <= 1.05 x msg_send (interleaved runs)",
                p.as_str()
            ),
            row("ha_msg_send", 8, p),
            row("msg_send_paired", 8, p),
            1.05,
        ));
    }
    let none = PlacementKind::None;
    out.push(match med("recovery_detect", 8, none) {
        Some(d) => Target {
            claim: "recovery_detect <= 1 ms (stretch 0.2 ms)".to_owned(),
            verdict: if d <= 1e6 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            detail: format!(
                "recovery_detect {} (limit 1 ms; stretch 0.2 ms {})",
                format_ns(d),
                if d <= 2e5 { "met" } else { "missed" }
            ),
        },
        None => Target {
            claim: "recovery_detect <= 1 ms (stretch 0.2 ms)".to_owned(),
            verdict: Verdict::NotMeasured,
            detail: "a row is missing".to_owned(),
        },
    });
    let claim = "recovery_total <= restart + 2 ms".to_owned();
    out.push(
        match (med("recovery_total", 8, none), med("restart", 8, none)) {
            (Some(total), Some(restart)) => Target {
                claim,
                verdict: if total <= restart + 2e6 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                detail: format!(
                    "recovery_total {} - restart {} = {} (limit 2 ms)",
                    format_ns(total),
                    format_ns(restart),
                    format_ns(total - restart)
                ),
            },
            _ => Target {
                claim,
                verdict: Verdict::NotMeasured,
                detail: "a row is missing".to_owned(),
            },
        },
    );
    out.push(match idle {
        Some(i) => {
            // A spinning thread would use the whole watch; allow 1 % of it.
            let server_share = i.server_ns as f64 / i.watched.as_nanos() as f64;
            let client_share = i.client_ns as f64 / i.client_blocked.as_nanos().max(1) as f64;
            let ok = server_share <= 0.01 && client_share <= 0.01;
            Target {
                claim: "adaptive mode sleeps after its budget (idle server, client waiting on a slow reply)"
                    .to_owned(),
                verdict: if ok { Verdict::Met } else { Verdict::Missed },
                detail: format!(
                    "idle server used {} of CPU in {:.2} s ({:.3} %); client blocked {:.2} s used {} ({:.3} %)",
                    format_ns(i.server_ns as f64),
                    i.watched.as_secs_f64(),
                    100.0 * server_share,
                    i.client_blocked.as_secs_f64(),
                    format_ns(i.client_ns as f64),
                    100.0 * client_share
                ),
            }
        }
        None => Target {
            claim: "adaptive mode sleeps after its budget".to_owned(),
            verdict: Verdict::NotMeasured,
            detail: "idle check not run".to_owned(),
        },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Case, CaseKind};

    fn row(name: &str, payload: usize, placement: PlacementKind, median_ns: f64) -> Row {
        Row {
            case: Case {
                name: name.into(),
                payload,
                placement,
                kind: CaseKind::Memcpy,
            },
            median_ns,
            p99_ns: median_ns,
            samples: 1,
            floor: None,
        }
    }

    fn verdict(targets: &[Target], claim_start: &str) -> Verdict {
        targets
            .iter()
            .find(|t| t.claim.starts_with(claim_start))
            .unwrap()
            .verdict
    }

    #[test]
    fn ratios_and_speed_ups_are_checked_in_the_right_direction() {
        let rows = [
            row("msg_send", 8, Apart, 150.0),
            row("spin_floor", 8, Apart, 100.0),
            row("pipe", 8, Apart, 15_000.0),
            row("uds_stream", 8, Apart, 14_999.0),
            row(
                "throughput_blocking_c4_r1",
                8,
                PlacementKind::None,
                30_000.0,
            ),
            row(
                "throughput_blocking_c4_r2",
                8,
                PlacementKind::None,
                20_000.0,
            ),
        ];
        let t = evaluate(&rows, None);
        assert_eq!(verdict(&t, "msg_send 8 B apart <= 1.5"), Verdict::Met);
        assert_eq!(
            verdict(&t, "msg_send 8 B apart >= 100 x faster than pipe"),
            Verdict::Met
        );
        assert_eq!(
            verdict(&t, "msg_send 8 B apart >= 100 x faster than uds_stream"),
            Verdict::Missed
        );
        assert_eq!(
            verdict(&t, "msg_send 8 B apart >= 5 x faster than iceoryx2"),
            Verdict::NotMeasured
        );
        assert_eq!(verdict(&t, "throughput blocking c4"), Verdict::Met);
        assert_eq!(verdict(&t, "ha_msg_send 8 B apart"), Verdict::NotMeasured);
        assert_eq!(verdict(&t, "recovery_detect"), Verdict::NotMeasured);
    }

    #[test]
    fn ha_rows_are_checked_against_their_interleaved_msg_send_and_the_restart() {
        let none = PlacementKind::None;
        let rows = [
            row("ha_msg_send", 8, Apart, 104.0),
            row("msg_send_paired", 8, Apart, 100.0),
            row("ha_msg_send", 8, Same, 106.0),
            row("msg_send_paired", 8, Same, 100.0),
            // The separate msg_send row must not be the reference.
            row("msg_send", 8, Same, 200.0),
            row("recovery_detect", 8, none, 900_000.0),
            row("restart", 8, none, 5_000_000.0),
            row("recovery_total", 8, none, 7_100_000.0),
        ];
        let t = evaluate(&rows, None);
        assert_eq!(verdict(&t, "ha_msg_send 8 B apart"), Verdict::Met);
        assert_eq!(verdict(&t, "ha_msg_send 8 B same"), Verdict::Missed);
        assert_eq!(verdict(&t, "recovery_detect"), Verdict::Met);
        assert_eq!(verdict(&t, "recovery_total"), Verdict::Missed);
        let detect = t.iter().find(|t| t.claim.starts_with("recovery_detect"));
        assert!(detect.unwrap().detail.contains("stretch 0.2 ms missed"));
    }
}
