//! The run's timeline: consecutive phases (the warm-up first), each with a
//! constant rate in open loop. Request `n`'s due time comes from the phase
//! it falls in, so a rate step (the burst scenario) is just two phases and
//! every phase holds exactly `round(rate x seconds)` requests.

use std::time::Duration;

/// One stretch of the run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Phase {
    pub(crate) name: &'static str,
    /// Open loop: requests per second. Closed loop: `None`.
    pub(crate) rate: Option<f64>,
    pub(crate) secs: f64,
    /// The warm-up is not.
    pub(crate) measured: bool,
}

#[derive(Debug)]
struct Span {
    phase: Phase,
    /// Offset of the phase's start from the run's start.
    start: Duration,
    /// Number of its first request (open loop).
    first: u64,
    /// How many requests it holds (open loop).
    count: u64,
}

#[derive(Debug)]
pub(crate) struct Schedule {
    spans: Vec<Span>,
}

impl Schedule {
    pub(crate) fn new(phases: Vec<Phase>) -> Self {
        let mut spans = Vec::with_capacity(phases.len());
        let (mut start, mut first) = (Duration::ZERO, 0);
        for phase in phases {
            let count = phase.rate.map_or(0, |r| (r * phase.secs).round() as u64);
            let secs = phase.secs;
            spans.push(Span {
                phase,
                start,
                first,
                count,
            });
            start += Duration::from_secs_f64(secs);
            first += count;
        }
        Self { spans }
    }

    pub(crate) fn phases(&self) -> impl Iterator<Item = &Phase> {
        self.spans.iter().map(|s| &s.phase)
    }

    /// Requests an open-loop phase holds.
    pub(crate) fn count(&self, phase: usize) -> u64 {
        self.spans[phase].count
    }

    /// Offset from the run's start at which it ends.
    pub(crate) fn end(&self) -> Duration {
        self.spans.last().map_or(Duration::ZERO, |s| {
            s.start + Duration::from_secs_f64(s.phase.secs)
        })
    }

    /// Offset at which measuring starts (the end of unmeasured phases).
    pub(crate) fn measure_from(&self) -> Duration {
        self.spans
            .iter()
            .find(|s| s.phase.measured)
            .map_or_else(|| self.end(), |s| s.start)
    }

    /// Open loop: request `n`'s phase and due time (offset from the start);
    /// `None` past the last request.
    pub(crate) fn due(&self, n: u64) -> Option<(usize, Duration)> {
        let (i, span) = self
            .spans
            .iter()
            .enumerate()
            .find(|(_, s)| n >= s.first && n < s.first + s.count)?;
        let rate = span.phase.rate?;
        Some((
            i,
            span.start + Duration::from_secs_f64((n - span.first) as f64 / rate),
        ))
    }

    /// Closed loop: the phase running at `offset`; `None` after the end.
    pub(crate) fn phase_at(&self, offset: Duration) -> Option<usize> {
        (offset < self.end())
            .then(|| self.spans.iter().rposition(|s| s.start <= offset))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &'static str, rate: f64, secs: f64, measured: bool) -> Phase {
        Phase {
            name,
            rate: Some(rate),
            secs,
            measured,
        }
    }

    #[test]
    fn a_rate_step_puts_the_right_number_of_requests_in_each_phase() {
        let s = Schedule::new(vec![
            open("warmup", 10.0, 1.0, false),
            open("low", 10.0, 2.0, true),
            open("high", 100.0, 1.0, true),
        ]);
        assert_eq!((s.count(0), s.count(1), s.count(2)), (10, 20, 100));
        assert_eq!(s.due(0), Some((0, Duration::ZERO)));
        assert_eq!(s.due(10), Some((1, Duration::from_secs(1))));
        assert_eq!(s.due(11), Some((1, Duration::from_millis(1100))));
        assert_eq!(s.due(30), Some((2, Duration::from_secs(3))));
        assert_eq!(s.due(31), Some((2, Duration::from_millis(3010))));
        assert_eq!(s.due(129).map(|d| d.0), Some(2));
        assert_eq!(s.due(130), None);
        assert_eq!(s.measure_from(), Duration::from_secs(1));
        assert_eq!(s.end(), Duration::from_secs(4));
    }

    #[test]
    fn due_times_never_go_backwards_across_phases() {
        let s = Schedule::new(vec![
            open("warmup", 7.0, 0.3, false),
            open("low", 33.0, 1.7, true),
            open("high", 250.0, 0.9, true),
        ]);
        let mut last = Duration::ZERO;
        let mut n = 0;
        while let Some((_, at)) = s.due(n) {
            assert!(at >= last && at < s.end(), "request {n} at {at:?}");
            last = at;
            n += 1;
        }
        assert_eq!(n, 2 + 56 + 225);
    }

    #[test]
    fn closed_loop_phases_come_from_the_clock() {
        let s = Schedule::new(vec![
            Phase {
                name: "warmup",
                rate: None,
                secs: 1.0,
                measured: false,
            },
            Phase {
                name: "steady",
                rate: None,
                secs: 2.0,
                measured: true,
            },
        ]);
        assert_eq!(s.due(0), None);
        assert_eq!(s.phase_at(Duration::from_millis(999)), Some(0));
        assert_eq!(s.phase_at(Duration::from_secs(1)), Some(1));
        assert_eq!(s.phase_at(Duration::from_secs(3)), None);
    }
}
