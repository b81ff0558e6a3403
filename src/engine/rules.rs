//! The expiry and freshness rules every session follows, whichever store keeps it.

use std::time::{Duration, SystemTime};

/// Default idle timeout: 30 minutes (NIST SP 800-63B revision 3, AAL2; OWASP ASVS 4.0 level 2).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default absolute lifetime: 12 hours (NIST SP 800-63B revision 3, AAL2; OWASP ASVS 4.0 level 2).
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Default window after a password entry during which [`Require::fresh`](crate::Require::fresh)
/// lets a session through: 10 minutes.
pub const DEFAULT_FRESH_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Default cap on one user's concurrent sessions. Far above what people use, low enough that
/// listing and revoking a user's sessions stays cheap even for an attacker who has the password
/// and logs in over and over.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;

/// How far in the future a password time may lie and still count: clocks of app instances
/// differ a little, never by minutes.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The longest timeout accepted. Longer ones (`Duration::MAX` for "no limit") are cut to this,
/// so deadline arithmetic cannot overflow and Redis accepts every TTL.
const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A session's idle deadline is written back to the store only when activity would move it by at
/// least this fraction of the idle timeout. With the default 30 minutes that is one write per
/// session every 3 minutes at most, and an idle session ends between 27 and 30 minutes after
/// its last request.
const REFRESH_FRACTION: u32 = 10;

/// When sessions end and when a password counts as recent.
#[derive(Clone, Debug)]
pub(crate) struct SessionRules {
    idle_timeout: Duration,
    absolute_timeout: Duration,
    fresh_window: Duration,
    max_sessions_per_user: usize,
}

impl Default for SessionRules {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            absolute_timeout: DEFAULT_ABSOLUTE_TIMEOUT,
            fresh_window: DEFAULT_FRESH_WINDOW,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
        }
    }
}

impl SessionRules {
    pub(crate) fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_absolute_timeout(&mut self, timeout: Duration) {
        self.absolute_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_fresh_window(&mut self, window: Duration) {
        self.fresh_window = window.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_max_sessions_per_user(&mut self, max: usize) {
        self.max_sessions_per_user = max.max(1);
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub(crate) fn absolute_timeout(&self) -> Duration {
        self.absolute_timeout
    }

    pub(crate) fn max_sessions_per_user(&self) -> usize {
        self.max_sessions_per_user
    }

    /// The absolute end of a session created at `now`.
    pub(crate) fn absolute_end(&self, now: SystemTime) -> SystemTime {
        now + self.absolute_timeout
    }

    /// The idle deadline of a session that is active at `now` and must end by `absolute_end`.
    pub(crate) fn idle_deadline(&self, now: SystemTime, absolute_end: SystemTime) -> SystemTime {
        (now + self.idle_timeout).min(absolute_end)
    }

    /// Whether a password entered at `authenticated_at` is recent enough for sensitive actions.
    pub(crate) fn is_fresh(&self, authenticated_at: SystemTime, now: SystemTime) -> bool {
        match now.duration_since(authenticated_at) {
            Ok(age) => age <= self.fresh_window,
            // Recorded by an instance whose clock runs ahead: fine within normal skew, but a
            // clock minutes ahead must not stretch sudo mode.
            Err(ahead) => ahead.duration() <= CLOCK_SKEW,
        }
    }

    /// Whether moving a deadline from `current` to `proposed` is worth a store write.
    pub(crate) fn worth_refreshing(&self, current: SystemTime, proposed: SystemTime) -> bool {
        proposed
            .duration_since(current)
            .is_ok_and(|gain| gain >= self.idle_timeout / REFRESH_FRACTION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_never_passes_the_absolute_end() {
        let rules = SessionRules::default();
        let now = SystemTime::now();
        let far = now + Duration::from_secs(86_400);
        let near = now + Duration::from_secs(60);
        assert_eq!(rules.idle_deadline(now, far), now + DEFAULT_IDLE_TIMEOUT);
        assert_eq!(rules.idle_deadline(now, near), near);
    }

    #[test]
    fn freshness_window_is_inclusive_and_tolerates_clock_steps() {
        let rules = SessionRules::default();
        let now = SystemTime::now();
        assert!(rules.is_fresh(now - DEFAULT_FRESH_WINDOW, now));
        assert!(!rules.is_fresh(now - DEFAULT_FRESH_WINDOW - Duration::from_secs(1), now));
        // A password entered "in the future" by a slightly fast clock is fresh; by a clock
        // minutes ahead, it is not.
        assert!(rules.is_fresh(now + Duration::from_secs(5), now));
        assert!(!rules.is_fresh(now + Duration::from_secs(600), now));
    }

    #[test]
    fn refresh_only_when_the_gain_reaches_a_tenth_of_the_window() {
        let rules = SessionRules::default();
        let now = SystemTime::now();
        let tenth = DEFAULT_IDLE_TIMEOUT / 10;
        let step = Duration::from_millis(1);
        assert!(!rules.worth_refreshing(now, now));
        assert!(!rules.worth_refreshing(now, now + tenth - step));
        assert!(rules.worth_refreshing(now, now + tenth));
        assert!(!rules.worth_refreshing(now + tenth, now));
    }

    #[test]
    fn timeouts_are_clamped_so_deadlines_cannot_overflow() {
        let mut rules = SessionRules::default();
        rules.set_idle_timeout(Duration::MAX);
        rules.set_absolute_timeout(Duration::MAX);
        rules.set_max_sessions_per_user(0);
        let now = SystemTime::now();
        let end = rules.absolute_end(now);
        assert_eq!(rules.idle_deadline(now, end), end);
        assert_eq!(rules.max_sessions_per_user(), 1);
    }
}
