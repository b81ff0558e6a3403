//! The expiry and freshness rules every session follows, whichever store keeps it.

use std::time::{Duration, SystemTime};

use super::links::LinkSettings;
use crate::record::{Factors, Lifetime, SessionRecord};

/// Whether a session may do what needs a recent proof of identity ("sudo mode").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Freshness {
    /// Every factor the account has was proven within the fresh window.
    Fresh,
    /// The password was, recently enough, but the account's second factor was not.
    SecondFactorDue,
    /// Not within the fresh window, or not a login that could be.
    Stale,
}

/// Default idle timeout: 30 minutes (NIST SP 800-63B revision 3, AAL2; OWASP ASVS 4.0 level 2).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default absolute lifetime: 12 hours (NIST SP 800-63B revision 3, AAL2; OWASP ASVS 4.0 level 2).
pub(crate) const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Default window after a password entry during which [`Require::fresh`](crate::Require::fresh)
/// lets a session through: 10 minutes.
pub(crate) const DEFAULT_FRESH_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Default time a login has between its password and its second factor: 5 minutes, enough to
/// find a phone, too short to keep a half-login around.
pub(crate) const DEFAULT_SECOND_FACTOR_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Default idle timeout of a session without a login: 15 minutes, half a login's, since nobody
/// has proven who they are and bots start such sessions too.
pub(crate) const DEFAULT_ANONYMOUS_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default absolute lifetime of a session without a login: 4 hours.
pub(crate) const DEFAULT_ANONYMOUS_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);
/// Default idle timeout of a remembered login ("keep me signed in"): 7 days. A remembered
/// session is a single-factor, long-lived one (NIST SP 800-63B AAL1, which asks for a new
/// login at least every 30 days and sets no idle limit); a week of disuse still ends it.
pub(crate) const DEFAULT_REMEMBER_IDLE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Default absolute lifetime of a remembered login: 30 days (NIST SP 800-63B AAL1).
pub(crate) const DEFAULT_REMEMBER_ABSOLUTE_TIMEOUT: Duration =
    Duration::from_secs(30 * 24 * 60 * 60);
/// Default limit on a session's data: 64 KiB of names and JSON values.
pub(crate) const DEFAULT_MAX_DATA_SIZE: usize = 64 * 1024;
/// Default number of sessions without a login that may start per minute from one client
/// address (an IPv6 /64).
pub(crate) const DEFAULT_ANONYMOUS_PER_ADDRESS: u32 = 20;
/// Default number of sessions without a login that may start per minute from one network (an
/// IPv4 /24 or an IPv6 /48).
pub(crate) const DEFAULT_ANONYMOUS_PER_NETWORK: u32 = 100;
/// Default size of the shared allowance of sessions without a login per minute, across every
/// app instance sharing the store, that only networks past their fair share (one address's
/// worth) draw on.
pub(crate) const DEFAULT_ANONYMOUS_PER_MINUTE: u32 = 1_000;

/// How long one kind of session lives: how long it may go unused (`idle`), and how long it may
/// last however active it is (`absolute`, measured from login). Start from the kind's defaults
/// and change what differs:
///
/// ```
/// use std::time::Duration;
/// use actix_login::{LoginMiddleware, MemoryStore, Timeouts};
///
/// let sessions = LoginMiddleware::builder(MemoryStore::new())
///     .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(15 * 60)))
///     .remember_timeouts(Timeouts::REMEMBERED.with_absolute(Duration::from_secs(14 * 24 * 60 * 60)))
///     .build();
/// ```
///
/// Values above 100 years count as 100 years.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a session may go unused before it ends. Activity moves the deadline forward,
    /// but the store is written at most once per tenth of this window: an idle session ends
    /// between 90 % and 100 % of it after its last request, never after `absolute`.
    pub idle: Duration,
    /// How long a session may last however active it is, measured from login.
    pub absolute: Duration,
}

impl Timeouts {
    /// A browser login's defaults: 30 minutes idle, 12 hours in all.
    pub const BROWSER: Self = Self::new(DEFAULT_IDLE_TIMEOUT, DEFAULT_ABSOLUTE_TIMEOUT);
    /// A remembered login's defaults ("keep me signed in"): 7 days idle, 30 days in all, the
    /// longest NIST SP 800-63B allows between logins for a single-factor session.
    pub const REMEMBERED: Self = Self::new(
        DEFAULT_REMEMBER_IDLE_TIMEOUT,
        DEFAULT_REMEMBER_ABSOLUTE_TIMEOUT,
    );
    /// The defaults of a session without a login (started by a visitor's first data write):
    /// 15 minutes idle, 4 hours in all.
    pub const ANONYMOUS: Self = Self::new(
        DEFAULT_ANONYMOUS_IDLE_TIMEOUT,
        DEFAULT_ANONYMOUS_ABSOLUTE_TIMEOUT,
    );

    /// These two timeouts.
    pub const fn new(idle: Duration, absolute: Duration) -> Self {
        Self { idle, absolute }
    }

    /// The same, with another idle timeout.
    #[must_use]
    pub const fn with_idle(self, idle: Duration) -> Self {
        Self { idle, ..self }
    }

    /// The same, with another absolute timeout.
    #[must_use]
    pub const fn with_absolute(self, absolute: Duration) -> Self {
        Self { absolute, ..self }
    }
}

/// Default cap on one user's concurrent sessions. Far above what people use, low enough that
/// listing and revoking a user's sessions stays cheap even for an attacker who has the password
/// and logs in over and over.
pub(crate) const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;

/// Default limit on one user's personal access tokens at once. Tokens do not count toward
/// [`DEFAULT_MAX_SESSIONS_PER_USER`]: they cannot push their owner's logins out, and logins
/// cannot push them out, except that a token made by a login token ends with that login, which
/// the cap may end like any other login.
pub(crate) const DEFAULT_MAX_TOKENS_PER_USER: usize = 20;
/// Default number of personal access tokens one user may create per
/// [`DEFAULT_TOKEN_CREATION_WINDOW`].
pub(crate) const DEFAULT_TOKEN_CREATIONS: u32 = 10;
/// Default window that [`DEFAULT_TOKEN_CREATIONS`] counts in: an hour.
pub(crate) const DEFAULT_TOKEN_CREATION_WINDOW: Duration = Duration::from_secs(60 * 60);

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
    anonymous_idle_timeout: Duration,
    anonymous_absolute_timeout: Duration,
    remember_idle_timeout: Duration,
    remember_absolute_timeout: Duration,
    fresh_window: Duration,
    second_factor_timeout: Duration,
    max_sessions_per_user: usize,
    max_tokens_per_user: usize,
    token_creations: u32,
    token_creation_window: Duration,
    max_data_size: usize,
    anonymous_per_address: u32,
    anonymous_per_network: u32,
    anonymous_per_minute: u32,
    links: LinkSettings,
}

impl Default for SessionRules {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            absolute_timeout: DEFAULT_ABSOLUTE_TIMEOUT,
            anonymous_idle_timeout: DEFAULT_ANONYMOUS_IDLE_TIMEOUT,
            anonymous_absolute_timeout: DEFAULT_ANONYMOUS_ABSOLUTE_TIMEOUT,
            remember_idle_timeout: DEFAULT_REMEMBER_IDLE_TIMEOUT,
            remember_absolute_timeout: DEFAULT_REMEMBER_ABSOLUTE_TIMEOUT,
            fresh_window: DEFAULT_FRESH_WINDOW,
            second_factor_timeout: DEFAULT_SECOND_FACTOR_TIMEOUT,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            max_tokens_per_user: DEFAULT_MAX_TOKENS_PER_USER,
            token_creations: DEFAULT_TOKEN_CREATIONS,
            token_creation_window: DEFAULT_TOKEN_CREATION_WINDOW,
            max_data_size: DEFAULT_MAX_DATA_SIZE,
            anonymous_per_address: DEFAULT_ANONYMOUS_PER_ADDRESS,
            anonymous_per_network: DEFAULT_ANONYMOUS_PER_NETWORK,
            anonymous_per_minute: DEFAULT_ANONYMOUS_PER_MINUTE,
            links: LinkSettings::default(),
        }
    }
}

/// The window the anonymous-session bounds count in.
pub(crate) const ANONYMOUS_WINDOW: Duration = Duration::from_secs(60);

impl SessionRules {
    pub(crate) fn set_anonymous_idle_timeout(&mut self, timeout: Duration) {
        self.anonymous_idle_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_anonymous_absolute_timeout(&mut self, timeout: Duration) {
        self.anonymous_absolute_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_max_data_size(&mut self, bytes: usize) {
        self.max_data_size = bytes;
    }

    pub(crate) fn set_anonymous_limits(&mut self, per_address: u32, per_minute: u32) {
        self.anonymous_per_address = per_address;
        self.anonymous_per_minute = per_minute;
    }

    pub(crate) fn set_anonymous_per_network(&mut self, per_network: u32) {
        self.anonymous_per_network = per_network;
    }

    pub(crate) fn max_data_size(&self) -> usize {
        self.max_data_size
    }

    /// Per address, per network, and the shared allowance past a network's fair share.
    pub(crate) fn anonymous_limits(&self) -> (u32, u32, u32) {
        (
            self.anonymous_per_address,
            self.anonymous_per_network,
            self.anonymous_per_minute,
        )
    }

    pub(crate) fn set_remember_idle_timeout(&mut self, timeout: Duration) {
        self.remember_idle_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_remember_absolute_timeout(&mut self, timeout: Duration) {
        self.remember_absolute_timeout = timeout.min(MAX_TIMEOUT);
    }

    /// The absolute end of a session of this kind created at `now`. A personal access token
    /// has its own end, chosen when it is created (see [`token_end`](Self::token_end)).
    pub(crate) fn absolute_end_of(&self, lifetime: Lifetime, now: SystemTime) -> SystemTime {
        now + match lifetime {
            Lifetime::Anonymous => self.anonymous_absolute_timeout,
            Lifetime::Standard => self.absolute_timeout,
            Lifetime::Pending => self.second_factor_timeout,
            Lifetime::Remembered => self.remember_absolute_timeout,
            Lifetime::Fixed => MAX_TIMEOUT,
        }
    }

    /// The end of a personal access token created at `now` that lasts `lifetime`, or as long
    /// as anything may when `None`.
    pub(crate) fn token_end(&self, now: SystemTime, lifetime: Option<Duration>) -> SystemTime {
        now + lifetime.map_or(MAX_TIMEOUT, |l| l.min(MAX_TIMEOUT))
    }

    /// Whether a session created at `created` and ending at `end` was given no end of its
    /// own (a personal access token without one lasts as long as anything may).
    pub(crate) fn is_endless(&self, created: SystemTime, end: SystemTime) -> bool {
        end.duration_since(created)
            .is_ok_and(|lifetime| lifetime >= MAX_TIMEOUT - Duration::from_secs(1))
    }

    /// The idle timeout of a session of this kind; `None` when it has none.
    pub(crate) fn idle_timeout_of(&self, lifetime: Lifetime) -> Option<Duration> {
        match lifetime {
            Lifetime::Anonymous => Some(self.anonymous_idle_timeout),
            Lifetime::Standard => Some(self.idle_timeout),
            Lifetime::Pending => Some(self.second_factor_timeout),
            Lifetime::Remembered => Some(self.remember_idle_timeout),
            Lifetime::Fixed => None,
        }
    }

    /// The idle deadline of a session of this kind that is active at `now` and must end by
    /// `absolute_end`.
    pub(crate) fn idle_deadline_of(
        &self,
        lifetime: Lifetime,
        now: SystemTime,
        absolute_end: SystemTime,
    ) -> SystemTime {
        match self.idle_timeout_of(lifetime) {
            Some(idle) => (now + idle).min(absolute_end),
            None => absolute_end,
        }
    }

    /// Whether moving the deadline of a session of this kind from `current` to `proposed` is
    /// worth a store write.
    pub(crate) fn worth_refreshing_of(
        &self,
        lifetime: Lifetime,
        current: SystemTime,
        proposed: SystemTime,
    ) -> bool {
        let Some(idle) = self.idle_timeout_of(lifetime) else {
            return false;
        };
        proposed
            .duration_since(current)
            .is_ok_and(|gain| gain >= idle / REFRESH_FRACTION)
    }

    pub(crate) fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_absolute_timeout(&mut self, timeout: Duration) {
        self.absolute_timeout = timeout.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_fresh_window(&mut self, window: Duration) {
        self.fresh_window = window.min(MAX_TIMEOUT);
    }

    pub(crate) fn set_second_factor_timeout(&mut self, timeout: Duration) {
        // At least a second, so that a pending login can be completed at all.
        self.second_factor_timeout = timeout.clamp(Duration::from_secs(1), MAX_TIMEOUT);
    }

    pub(crate) fn set_max_sessions_per_user(&mut self, max: usize) {
        self.max_sessions_per_user = max.max(1);
    }

    pub(crate) fn set_max_tokens_per_user(&mut self, max: usize) {
        self.max_tokens_per_user = max;
    }

    pub(crate) fn max_tokens_per_user(&self) -> usize {
        self.max_tokens_per_user
    }

    pub(crate) fn set_token_creation_limit(&mut self, max: u32, window: Duration) {
        self.token_creations = max;
        // A zero window would be no window; one millisecond is the shortest a counter keeps.
        self.token_creation_window = window.clamp(Duration::from_millis(1), MAX_TIMEOUT);
    }

    /// How many tokens one user may create, and in what window.
    pub(crate) fn token_creation_limit(&self) -> (u32, Duration) {
        (self.token_creations, self.token_creation_window)
    }

    pub(crate) fn absolute_timeout(&self) -> Duration {
        self.absolute_timeout
    }

    /// How long one-time links live and how many may be issued.
    pub(crate) fn links(&self) -> &LinkSettings {
        &self.links
    }

    pub(crate) fn set_links(&mut self, links: LinkSettings) {
        self.links = links;
    }

    pub(crate) fn max_sessions_per_user(&self) -> usize {
        self.max_sessions_per_user
    }

    /// Whether `record` may do what needs a recent password ("sudo mode"): a login whose
    /// password was entered within the fresh window. A personal access token never may: no
    /// password was entered in it. On an account with a second factor, the latest proof must
    /// have included it.
    pub(crate) fn freshness(&self, record: &SessionRecord, now: SystemTime) -> Freshness {
        if record.token_name().is_some()
            || !record.is_login()
            || !self.is_fresh(record.authenticated_at(), now)
        {
            return Freshness::Stale;
        }
        match record.factors() {
            Factors::Password | Factors::Both => Freshness::Fresh,
            Factors::PasswordOnly => Freshness::SecondFactorDue,
            Factors::Pending => Freshness::Stale,
        }
    }

    /// [`freshness`](Self::freshness) as the error a refusal answers with.
    pub(crate) fn check_fresh(
        &self,
        record: &SessionRecord,
        now: SystemTime,
    ) -> Result<(), crate::error::Error> {
        match self.freshness(record, now) {
            Freshness::Fresh => Ok(()),
            Freshness::SecondFactorDue => Err(crate::error::Error::SecondFactorReauthRequired),
            Freshness::Stale => Err(crate::error::Error::ReauthRequired),
        }
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
        assert_eq!(
            rules.idle_deadline_of(Lifetime::Standard, now, far),
            now + DEFAULT_IDLE_TIMEOUT
        );
        assert_eq!(rules.idle_deadline_of(Lifetime::Standard, now, near), near);
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
    fn freshness_asks_for_the_second_factor_where_the_account_has_one() {
        use serde_json::value::RawValue;
        let rules = SessionRules::default();
        let now = SystemTime::now();
        let user = RawValue::from_string("{}".into()).unwrap();
        let login = SessionRecord::new("s", "7", user, now, now + DEFAULT_ABSOLUTE_TIMEOUT);
        let with = |factors| login.clone().with_factors(factors);
        assert_eq!(
            rules.freshness(&with(Factors::Password), now),
            Freshness::Fresh
        );
        assert_eq!(rules.freshness(&with(Factors::Both), now), Freshness::Fresh);
        assert_eq!(
            rules.freshness(&with(Factors::PasswordOnly), now),
            Freshness::SecondFactorDue
        );
        // A half-login is no login, fresh or not.
        assert_eq!(
            rules.freshness(&with(Factors::Pending), now),
            Freshness::Stale
        );
        // Both factors, but the password too long ago.
        let later = now + DEFAULT_FRESH_WINDOW + Duration::from_secs(1);
        assert_eq!(
            rules.freshness(&with(Factors::Both), later),
            Freshness::Stale
        );
        assert_eq!(
            rules.freshness(&with(Factors::PasswordOnly), later),
            Freshness::Stale
        );
    }

    #[test]
    fn a_half_login_lives_by_the_second_factor_timeout() {
        let mut rules = SessionRules::default();
        rules.set_second_factor_timeout(Duration::ZERO);
        let now = SystemTime::now();
        let end = rules.absolute_end_of(Lifetime::Pending, now);
        assert_eq!(end, now + Duration::from_secs(1));
        assert_eq!(rules.idle_deadline_of(Lifetime::Pending, now, end), end);
        let default = SessionRules::default();
        assert_eq!(
            default.absolute_end_of(Lifetime::Pending, now),
            now + DEFAULT_SECOND_FACTOR_TIMEOUT
        );
    }

    #[test]
    fn refresh_only_when_the_gain_reaches_a_tenth_of_the_window() {
        let rules = SessionRules::default();
        let now = SystemTime::now();
        let tenth = DEFAULT_IDLE_TIMEOUT / 10;
        let step = Duration::from_millis(1);
        assert!(!rules.worth_refreshing_of(Lifetime::Standard, now, now));
        assert!(!rules.worth_refreshing_of(Lifetime::Standard, now, now + tenth - step));
        assert!(rules.worth_refreshing_of(Lifetime::Standard, now, now + tenth));
        assert!(!rules.worth_refreshing_of(Lifetime::Standard, now + tenth, now));
    }

    #[test]
    fn timeouts_are_clamped_so_deadlines_cannot_overflow() {
        let mut rules = SessionRules::default();
        rules.set_idle_timeout(Duration::MAX);
        rules.set_absolute_timeout(Duration::MAX);
        rules.set_max_sessions_per_user(0);
        let now = SystemTime::now();
        let end = rules.absolute_end_of(Lifetime::Standard, now);
        assert_eq!(rules.idle_deadline_of(Lifetime::Standard, now, end), end);
        assert_eq!(rules.max_sessions_per_user(), 1);
    }
}
