//! Reconnect delays: exponential with jitter, so that a thousand proxies that lost the same
//! control plane do not come back at the same instant.

use std::time::Duration;

/// Delays between reconnect attempts: doubling from `initial` up to `max`, each one drawn
/// uniformly from the upper half of the current step ("equal jitter"), so a delay is never
/// shorter than half the step nor longer than the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// A running sequence of delays.
#[derive(Debug)]
pub(crate) struct Delays {
    policy: Backoff,
    step: Duration,
    rng: fastrand::Rng,
}

impl Delays {
    pub fn new(policy: Backoff, rng: fastrand::Rng) -> Self {
        Self {
            step: policy.initial,
            policy,
            rng,
        }
    }

    /// The next delay; each call doubles the step up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.policy.max);
        self.step = step.saturating_mul(2).min(self.policy.max);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.rng.u64(0..=spread))
    }

    /// Back to the first step: the connection worked.
    pub fn reset(&mut self) {
        self.step = self.policy.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut d = Delays::new(Backoff::default(), fastrand::Rng::with_seed(7));
        let steps_ms = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for step in steps_ms {
            let got = d.next_delay();
            let step = Duration::from_millis(step);
            assert!(got >= step / 2 && got <= step, "{got:?} outside {step:?}");
        }
        d.reset();
        assert!(d.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_clients() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut d = Delays::new(Backoff::default(), fastrand::Rng::with_seed(seed));
            for _ in 0..6 {
                d.next_delay();
            }
            seen.insert(d.next_delay());
        }
        assert!(seen.len() > 10, "{seen:?}");
    }

    #[test]
    fn odd_policies_do_not_panic() {
        for (initial, max) in [(0, 0), (0, 10), (10, 0), (u64::MAX / 2, u64::MAX)] {
            let mut d = Delays::new(
                Backoff {
                    initial: Duration::from_millis(initial),
                    max: Duration::from_millis(max),
                },
                fastrand::Rng::with_seed(1),
            );
            for _ in 0..70 {
                assert!(d.next_delay() <= Duration::from_millis(max));
            }
        }
    }
}
