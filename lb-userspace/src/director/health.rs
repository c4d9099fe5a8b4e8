//! Rise/fall bookkeeping: turns probe results into up/down transitions, so one lost probe does
//! not flap a backend (keepalived's semantics).

/// Rise/fall bookkeeping for one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

/// A change of a backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl Health {
    /// Backends start up, as in keepalived: a restarted director serves at once, and a dead
    /// backend is taken out after `fall` failed probes.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            up: true,
            streak: 0,
        }
    }

    /// A backend known to be out of service (an adopted data plane had it so): it returns
    /// after `rise` successful probes.
    #[must_use]
    pub const fn down() -> Self {
        Self {
            up: false,
            streak: 0,
        }
    }

    #[must_use]
    pub const fn is_up(&self) -> bool {
        self.up
    }

    /// Records one probe result; returns the transition it completes, if any.
    pub fn record(&mut self, success: bool, rise: u32, fall: u32) -> Option<Transition> {
        if success == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak < needed {
            return None;
        }
        self.up = success;
        self.streak = 0;
        Some(if success {
            Transition::Up
        } else {
            Transition::Down
        })
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_does_not_flap_and_fall_failures_take_it_down() {
        let mut h = Health::new();
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(
            h.record(true, 2, 3),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(Transition::Down));
        assert!(!h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
    }

    #[test]
    fn rise_successes_bring_it_back() {
        let mut h = Health::new();
        assert_eq!(h.record(false, 2, 1), Some(Transition::Down));
        assert_eq!(h.record(true, 2, 1), None);
        assert_eq!(
            h.record(false, 2, 1),
            None,
            "a failure resets the success streak"
        );
        assert_eq!(h.record(true, 2, 1), None);
        assert_eq!(h.record(true, 2, 1), Some(Transition::Up));
        assert!(h.is_up());
    }
}
