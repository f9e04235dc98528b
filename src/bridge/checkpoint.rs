//! Which remote events of a login are fully handled, so the stored checkpoint never skips one.
//!
//! Events of one login go to many portals and finish out of order. The safe checkpoint is the
//! highest position below which every received event has finished; a restart resumes there and
//! the (idempotent) handling of anything after it repeats harmlessly.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct CheckpointTracker {
    in_flight: BTreeSet<i64>,
    highest_seen: Option<i64>,
    committed: Option<i64>,
}

impl CheckpointTracker {
    pub fn new(committed: Option<i64>) -> Self {
        Self {
            committed,
            highest_seen: committed,
            ..Self::default()
        }
    }

    pub fn started(&mut self, position: i64) {
        self.in_flight.insert(position);
        self.highest_seen = Some(self.highest_seen.map_or(position, |h| h.max(position)));
    }

    /// Marks `position` finished; returns a new checkpoint to store when it moved forward.
    pub fn finished(&mut self, position: i64) -> Option<i64> {
        self.in_flight.remove(&position);
        let safe = match self.in_flight.first() {
            Some(&lowest) => lowest - 1,
            None => self.highest_seen?,
        };
        if self.committed.is_none_or(|c| safe > c) {
            self.committed = Some(safe);
            Some(safe)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_waits_for_the_slowest_event() {
        let mut t = CheckpointTracker::new(Some(4));
        for p in 5..=8 {
            t.started(p);
        }
        assert_eq!(t.finished(7), None, "5 and 6 are still running");
        assert_eq!(t.finished(5), Some(5));
        assert_eq!(t.finished(8), None, "6 still running");
        assert_eq!(t.finished(6), Some(8));
        t.started(9);
        assert_eq!(t.finished(9), Some(9));
    }

    #[test]
    fn never_moves_backwards() {
        let mut t = CheckpointTracker::new(Some(10));
        t.started(3);
        assert_eq!(t.finished(3), None);
    }
}
