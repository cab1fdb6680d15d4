//! Medians of criterion's samples, recorded on the side, and the ratio table.

use std::time::Duration;

/// Records every batch a criterion `iter_custom` routine timed. Criterion calls the routine
/// during warm-up (doubling batch sizes) and then exactly `sample_size` times for the samples, so
/// the last `sample_size` batches are the samples; the median of their per-iteration times is
/// criterion's own median estimate.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    batches: Vec<(u64, Duration)>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a batch of `iters` that took `elapsed`, and returns `elapsed` (for `iter_custom`).
    pub fn record(&mut self, iters: u64, elapsed: Duration) -> Duration {
        self.batches.push((iters, elapsed));
        elapsed
    }

    /// The median time per iteration, in nanoseconds, of the last `samples` batches.
    ///
    /// `None` if fewer were recorded (as when criterion runs in test or list mode, or filtered
    /// this case out), or if those batches do not have the iteration counts of criterion's
    /// sampling plans (linear: d, 2d, .., nd; flat: all equal), as when a command-line option
    /// changed the sample size: then they are not criterion's samples.
    pub fn median_ns(&self, samples: usize) -> Option<f64> {
        if samples == 0 || self.batches.len() < samples {
            return None;
        }
        let window = &self.batches[self.batches.len() - samples..];
        let d = window[0].0;
        let linear = (1u64..).zip(window).all(|(k, b)| b.0 == k * d);
        let flat = window.iter().all(|b| b.0 == d);
        if !(linear || flat) {
            return None;
        }
        let mut per_iter: Vec<f64> = window
            .iter()
            .map(|&(iters, d)| d.as_nanos() as f64 / iters.max(1) as f64)
            .collect();
        per_iter.sort_by(f64::total_cmp);
        let mid = per_iter.len() / 2;
        Some(if per_iter.len() % 2 == 1 {
            per_iter[mid]
        } else {
            (per_iter[mid - 1] + per_iter[mid]) / 2.0
        })
    }
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), to tell from a report whether other
/// work competed for the CPUs during the run.
pub fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let three: Vec<&str> = s.split_ascii_whitespace().take(3).collect();
    (three.len() == 3).then(|| three.join(" "))
}

/// Formats nanoseconds with a unit that keeps 3 to 4 significant digits.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The table of medians and their ratios to the two floors (`spin_floor`, `futex_floor` by
/// name); rows without a median are listed as skipped. A row named `<case>/<size>` is compared
/// with the floors of its size, `spin_floor/<size>` and `futex_floor/<size>`.
pub fn ratio_table(group: &str, rows: &[(&str, Option<f64>)]) -> String {
    let find = |name: &str| rows.iter().find(|r| r.0 == name).and_then(|r| r.1);
    let floors = |name: &str| {
        let size = name.rfind('/').map_or("", |i| &name[i..]);
        (
            find(&format!("spin_floor{size}")),
            find(&format!("futex_floor{size}")),
        )
    };
    let ratio = |v: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".to_owned(),
    };
    let mut out = format!(
        "{group}: medians\n{:<20} {:>12} {:>14} {:>14}\n",
        "case", "median", "/ spin_floor", "/ futex_floor"
    );
    for (name, median) in rows {
        let (spin, futex) = floors(name);
        match median {
            Some(m) => out.push_str(&format!(
                "{name:<20} {:>12} {:>14} {:>14}\n",
                format_ns(*m),
                ratio(*m, spin),
                ratio(*m, futex)
            )),
            None => out.push_str(&format!("{name:<20} {:>12}\n", "(not measured)")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_uses_only_the_last_samples() {
        let mut r = Recorder::new();
        r.record(1, Duration::from_nanos(1_000_000)); // warm-up outlier
        for (iters, ns) in [(1, 10), (2, 40), (3, 90)] {
            r.record(iters, Duration::from_nanos(ns));
        }
        // per iteration: 10, 20, 30
        assert_eq!(r.median_ns(3), Some(20.0));
        assert_eq!(r.median_ns(5), None);
    }

    #[test]
    fn median_refuses_a_window_that_is_not_a_sampling_plan() {
        let mut r = Recorder::new();
        for iters in [1, 2, 4, 8, 16, 3, 6, 9, 12] {
            r.record(iters, Duration::from_nanos(10 * iters));
        }
        assert_eq!(r.median_ns(4), Some(10.0));
        assert_eq!(r.median_ns(3), None); // 6, 9, 12 is not d, 2d, 3d
        assert_eq!(r.median_ns(5), None); // reaches into warm-up
    }

    #[test]
    fn median_of_a_flat_plan_averages_the_middle_two() {
        let mut r = Recorder::new();
        for ns in [40, 10, 30, 20] {
            r.record(5, Duration::from_nanos(5 * ns));
        }
        assert_eq!(r.median_ns(4), Some(25.0));
    }

    #[test]
    fn sized_rows_are_compared_with_the_floors_of_their_size() {
        let rows = [
            ("msg_send/4KiB", Some(300.0)),
            ("futex_floor/4KiB", Some(600.0)),
            ("spin_floor/4KiB", Some(100.0)),
            ("msg_send/64KiB", Some(4000.0)),
            ("futex_floor/64KiB", Some(8000.0)),
            ("spin_floor/64KiB", Some(2000.0)),
        ];
        let table = ratio_table("g", &rows);
        let line = |name: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap()
                .split_whitespace()
                .skip(3)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("msg_send/4KiB"), ["3.00x", "0.50x"]);
        assert_eq!(line("msg_send/64KiB"), ["2.00x", "0.50x"]);
    }
}
