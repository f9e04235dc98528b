//! Pacing for retrying a transient failure inside a portal's lane: 250 ms, doubling up to 15 s,
//! until `bridge.max_retry_seconds` have passed. The lane waits rather than moving on, so
//! events keep their order; the deadline bounds how long one event can hold it.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(250);
const LONGEST: Duration = Duration::from_secs(15);

pub(super) struct RetryPacing {
    deadline: Instant,
    backoff: Duration,
}

impl RetryPacing {
    pub(super) fn new(max_retry_seconds: u64) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_secs(max_retry_seconds),
            backoff: FIRST,
        }
    }

    /// The wait before the next attempt, `None` once it would end past the deadline.
    pub(super) fn next_wait(&self) -> Option<Duration> {
        (Instant::now() + self.backoff < self.deadline).then_some(self.backoff)
    }

    /// Waits [`Self::next_wait`] and doubles it for the attempt after.
    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.advance();
    }

    fn advance(&mut self) {
        self.backoff = (self.backoff * 2).min(LONGEST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest_and_stop_at_the_deadline() {
        let mut pacing = RetryPacing::new(60);
        let mut waits = Vec::new();
        while let Some(wait) = pacing.next_wait() {
            waits.push(wait);
            // Time passes as if the wait had been slept.
            pacing.deadline -= wait;
            pacing.advance();
        }
        assert_eq!(waits[..4], [FIRST, FIRST * 2, FIRST * 4, FIRST * 8]);
        assert!(waits.iter().all(|w| *w <= LONGEST));
        let total: Duration = waits.iter().sum();
        assert!(
            total < Duration::from_secs(60) && total > Duration::from_secs(40),
            "{total:?}"
        );
        assert!(
            RetryPacing::new(0).next_wait().is_none(),
            "no time, no retry"
        );
    }
}
