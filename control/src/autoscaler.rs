//! The autoscaling policy of one deployment, as a pure function of the load
//! it is shown and the time it is told: no clock, no I/O, so every rule is
//! testable to the second.
//!
//! - signal: in-flight + parked requests, averaged over `autoscaling_window`
//!   (stable) and over a tenth of it (burst);
//! - desired = ceil(signal / (concurrency_target x utilization)), clamped to
//!   [min_replica, max_replica] (at most 1 for a development deployment);
//! - up: at once; down: only once load has stayed low for `scale_down_delay`,
//!   and by at most `max_scale_down_rate` % of the replicas per step; to zero
//!   the same way, after a full delay with no traffic;
//! - burst mode (after Knative's panic mode): when the burst signal needs more
//!   than twice the current capacity, scale on the burst signal and do not
//!   scale down until the burst signal has stayed below that for a stable
//!   window.

use std::collections::VecDeque;
use std::time::Duration;

use config::Autoscaling;

/// The burst window is this fraction of the stable window.
const BURST_WINDOW_FRACTION: u32 = 10;
/// Burst mode starts when the burst signal needs this many times the current capacity.
const BURST_THRESHOLD: f64 = 2.0;

/// What the autoscaler decided, with the inputs that led to it (for logs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Replicas wanted now.
    pub desired: u32,
    /// Average concurrency over the stable window.
    pub stable_signal: f64,
    /// Average concurrency over the burst window.
    pub burst_signal: f64,
    /// Whether burst mode is on.
    pub burst: bool,
}

/// The autoscaling state of one deployment.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    settings: Autoscaling,
    max: u32,
    samples: VecDeque<(Duration, f64)>,
    /// Since when the stable signal has wanted fewer replicas than run.
    low_since: Option<Duration>,
    /// When the burst signal last exceeded the burst threshold.
    last_burst: Option<Duration>,
}

impl Autoscaler {
    /// A policy with these settings; development deployments run at most one replica.
    pub fn new(settings: Autoscaling, development: bool) -> Self {
        let max = if development { 1 } else { settings.max_replica };
        Self {
            settings,
            max: max.max(settings.min_replica.min(max)),
            samples: VecDeque::new(),
            low_since: None,
            last_burst: None,
        }
    }

    /// The load that `replicas` replicas serve at the target utilisation:
    /// what a wake for that many counts as.
    pub fn load_for(&self, replicas: u32) -> f64 {
        f64::from(replicas)
            * f64::from(self.settings.concurrency_target)
            * f64::from(self.settings.target_utilization_percentage)
            / 100.0
    }

    /// The most replicas it will ever want.
    pub fn max_replicas(&self) -> u32 {
        self.max
    }

    /// Records the concurrency (in-flight + parked requests) seen at `now`.
    pub fn observe(&mut self, now: Duration, concurrency: f64) {
        self.samples.push_back((now, concurrency));
        let keep_from = now.saturating_sub(self.window());
        while self.samples.front().is_some_and(|(t, _)| *t < keep_from) {
            self.samples.pop_front();
        }
    }

    /// The replica count to run at `now`, given `current` replicas.
    pub fn decide(&mut self, now: Duration, current: u32) -> Decision {
        let stable_signal = self.average(now, self.window());
        let burst_signal = self.average(now, self.window() / BURST_WINDOW_FRACTION);
        let per_replica = f64::from(self.settings.concurrency_target)
            * f64::from(self.settings.target_utilization_percentage)
            / 100.0;
        let (floor, ceiling) = (self.settings.min_replica.min(self.max), self.max);
        // The epsilon keeps float noise (2.1 / 0.7 = 3.0000000000000004) from
        // adding a replica.
        let want = |signal: f64| {
            ((signal / per_replica - 1e-9).max(0.0).ceil() as u32).clamp(floor, ceiling)
        };

        let capacity = f64::from(current) * per_replica;
        if burst_signal > 0.0 && burst_signal > BURST_THRESHOLD * capacity {
            self.last_burst = Some(now);
        }
        let burst = self
            .last_burst
            .is_some_and(|t| now.saturating_sub(t) < self.window());

        let target = if burst {
            want(stable_signal).max(want(burst_signal))
        } else {
            want(stable_signal)
        };
        let desired = if target >= current {
            self.low_since = None;
            target
        } else if burst {
            // Never scale down while a burst is on.
            self.low_since = None;
            current
        } else {
            let since = *self.low_since.get_or_insert(now);
            let delay = Duration::from_secs(u64::from(self.settings.scale_down_delay));
            if now.saturating_sub(since) >= delay {
                // One step, then another full delay before the next.
                self.low_since = Some(now);
                let step = (u64::from(current) * u64::from(self.settings.max_scale_down_rate))
                    .div_ceil(100)
                    .max(1) as u32;
                target.max(current.saturating_sub(step))
            } else {
                current
            }
        };
        Decision {
            desired: self.clamp(desired),
            stable_signal,
            burst_signal,
            burst,
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.settings.autoscaling_window))
    }

    fn clamp(&self, replicas: u32) -> u32 {
        replicas.clamp(self.settings.min_replica.min(self.max), self.max)
    }

    /// Mean of the samples in the last `window` up to `now`, i.e. in
    /// `(now - window, now]` (0 without samples).
    fn average(&self, now: Duration, window: Duration) -> f64 {
        let from = now.checked_sub(window);
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(t, _)| from.is_none_or(|f| *t > f) && *t <= now)
            .fold((0.0, 0u32), |(sum, n), (_, c)| (sum + c, n + 1));
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min: u32, max: u32) -> Autoscaling {
        Autoscaling {
            min_replica: min,
            max_replica: max,
            autoscaling_window: 60,
            scale_down_delay: 900,
            max_scale_down_rate: 50,
            concurrency_target: 1,
            target_utilization_percentage: 70,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Feeds one sample a second from `from` to `to` (exclusive).
    fn feed(a: &mut Autoscaler, from: u64, to: u64, concurrency: f64) {
        for t in from..to {
            a.observe(secs(t), concurrency);
        }
    }

    #[test]
    fn ramps_up_at_once_by_the_formula_and_within_max() {
        let mut a = Autoscaler::new(settings(0, 10), false);
        feed(&mut a, 0, 60, 3.5);
        // ceil(3.5 / 0.7) = 5
        assert_eq!(a.decide(secs(59), 5).desired, 5);
        assert_eq!(a.decide(secs(59), 2).desired, 5, "up at once");
        feed(&mut a, 60, 120, 100.0);
        assert_eq!(a.decide(secs(119), 5).desired, 10, "clamped to max");
    }

    #[test]
    fn plateau_keeps_the_count() {
        let mut a = Autoscaler::new(settings(0, 10), false);
        for t in (0..600).step_by(10) {
            feed(&mut a, t, t + 10, 2.1);
            assert_eq!(a.decide(secs(t + 9), 3).desired, 3);
        }
    }

    #[test]
    fn scales_down_only_after_the_delay_and_by_at_most_the_rate_per_step() {
        let mut a = Autoscaler::new(settings(0, 10), false);
        feed(&mut a, 0, 60, 7.0); // 10 replicas wanted
        assert_eq!(a.decide(secs(59), 10).desired, 10);
        feed(&mut a, 60, 120, 0.7); // 1 replica would do
        let low_from = 119;
        assert_eq!(
            a.decide(secs(low_from), 10).desired,
            10,
            "delay just started"
        );
        feed(&mut a, 120, 1019, 0.7);
        assert_eq!(
            a.decide(secs(low_from + 899), 10).desired,
            10,
            "one second short"
        );
        feed(&mut a, 1019, 1020, 0.7);
        assert_eq!(
            a.decide(secs(low_from + 900), 10).desired,
            5,
            "50% of 10 per step"
        );
        feed(&mut a, 1020, 1920, 0.7);
        assert_eq!(
            a.decide(secs(low_from + 1000), 5).desired,
            5,
            "each step waits a full delay"
        );
        assert_eq!(
            a.decide(secs(low_from + 1800), 5).desired,
            2,
            "ceil(50% of 5) = 3 removed"
        );
    }

    #[test]
    fn scales_to_zero_after_a_full_delay_without_traffic_but_not_below_min() {
        let mut to_zero = Autoscaler::new(settings(0, 4), false);
        let mut kept = Autoscaler::new(settings(1, 4), false);
        for a in [&mut to_zero, &mut kept] {
            feed(a, 0, 60, 0.5);
            assert_eq!(a.decide(secs(59), 1).desired, 1);
            feed(a, 60, 2000, 0.0);
            assert_eq!(a.decide(secs(120), 1).desired, 1);
        }
        assert_eq!(to_zero.decide(secs(1020), 1).desired, 0);
        assert_eq!(kept.decide(secs(1020), 1).desired, 1);
        // From zero, the first traffic wants a replica at once.
        to_zero.observe(secs(2000), 1.0);
        assert_eq!(to_zero.decide(secs(2000), 0).desired, 1);
    }

    #[test]
    fn min_is_kept_even_without_samples() {
        let mut a = Autoscaler::new(settings(2, 5), false);
        assert_eq!(a.decide(secs(0), 0).desired, 2);
    }

    #[test]
    fn development_deployments_never_exceed_one_replica() {
        let mut a = Autoscaler::new(settings(0, 1), true);
        feed(&mut a, 0, 60, 50.0);
        assert_eq!(a.decide(secs(59), 1).desired, 1);
        let mut b = Autoscaler::new(settings(0, 5), true);
        feed(&mut b, 0, 60, 50.0);
        assert_eq!(b.decide(secs(59), 0).desired, 1);
    }

    #[test]
    fn burst_mode_scales_on_the_short_window_and_holds_until_calm() {
        let mut a = Autoscaler::new(settings(0, 20), false);
        feed(&mut a, 0, 60, 0.7); // 1 replica
        assert_eq!(a.decide(secs(59), 1).desired, 1);
        // A 6 s spike: the stable average barely moves, the burst one jumps.
        feed(&mut a, 60, 66, 7.0);
        let d = a.decide(secs(65), 1);
        assert!(d.burst, "{d:?}");
        assert_eq!(d.desired, 10, "scaled on the burst window: ceil(7 / 0.7)");
        assert!(d.stable_signal < 2.0, "{d:?}");
        // Load is back to low, but burst mode holds the count for a window.
        feed(&mut a, 66, 120, 0.7);
        let d = a.decide(secs(119), 10);
        assert!(d.burst && d.desired == 10, "{d:?}");
        // After a calm stable window burst mode ends; scale-down waits its delay.
        feed(&mut a, 120, 200, 0.7);
        let d = a.decide(secs(199), 10);
        assert!(!d.burst && d.desired == 10, "{d:?}");
    }
}
