//! Middleware settings and the builder that collects them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::cookie::SameSite;

use crate::client::{ClientIpHeader, Proxies};
use crate::cookie::CookieConfig;
use crate::csrf::CsrfConfig;
use crate::sessions::Sessions;
use crate::store::{DynStore, SessionStore};
use crate::LoginMiddleware;

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

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) cookie: CookieConfig,
    pub(crate) csrf: CsrfConfig,
    pub(crate) proxies: Proxies,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) fresh_window: Duration,
    pub(crate) max_sessions_per_user: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cookie: CookieConfig::default(),
            csrf: CsrfConfig::default(),
            proxies: Proxies::default(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            absolute_timeout: DEFAULT_ABSOLUTE_TIMEOUT,
            fresh_window: DEFAULT_FRESH_WINDOW,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
        }
    }
}

impl Config {
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

/// Configures a [`LoginMiddleware`]. Made by [`LoginMiddleware::builder`].
///
/// ```
/// use std::time::Duration;
/// use actix_login::{LoginMiddleware, MemoryStore, SameSite};
///
/// let middleware = LoginMiddleware::builder(MemoryStore::new())
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .absolute_timeout(Duration::from_secs(8 * 60 * 60))
///     .cookie_same_site(SameSite::Strict)
///     .build();
/// ```
#[must_use]
pub struct LoginMiddlewareBuilder {
    store: Arc<dyn DynStore>,
    config: Config,
}

impl LoginMiddlewareBuilder {
    pub(crate) fn new(store: impl SessionStore) -> Self {
        Self {
            store: Arc::new(store),
            config: Config::default(),
        }
    }

    /// How long a session may go unused before it ends (default 30 minutes).
    ///
    /// Activity moves the deadline forward, but the store is written at most once per tenth of
    /// this window: an idle session ends between 90 % and 100 % of `timeout` after its last
    /// request, and never after the [absolute timeout](Self::absolute_timeout). Values above 100
    /// years count as 100 years.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// How long a session may last however active it is (default 12 hours). Measured from login.
    /// Values above 100 years count as 100 years.
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.config.absolute_timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// How recently the password must have been entered for routes wrapped in
    /// [`Require::fresh`](crate::Require::fresh) (default 10 minutes). Older sessions get
    /// `403 {"error":"reauth_required"}` until [`Session::reauthenticate`](crate::Session::reauthenticate).
    pub fn fresh_window(mut self, window: Duration) -> Self {
        self.config.fresh_window = window.min(MAX_TIMEOUT);
        self
    }

    /// The most sessions one user may have at once (default 100). A login beyond it ends that
    /// user's oldest sessions. Values below 1 count as 1.
    pub fn max_sessions_per_user(mut self, max: usize) -> Self {
        self.config.max_sessions_per_user = max.max(1);
        self
    }

    /// The cookie name (default `__Host-id`).
    ///
    /// Browsers accept a `__Host-` cookie only if it is `Secure`, has `Path=/` and no `Domain`,
    /// which is what this crate sends unless [`cookie_secure(false)`](Self::cookie_secure) is set.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie.name = name.into();
        self
    }

    /// Whether the cookie is `Secure` (default `true`).
    ///
    /// Browsers accept `Secure` cookies from `http://localhost`, so turn this off only for a
    /// plain-HTTP development host that is not localhost, and pick a name without the `__Host-`
    /// or `__Secure-` prefix.
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.config.cookie.secure = secure;
        self
    }

    /// The cookie's `SameSite` attribute (default `Lax`). `Strict` also withholds the cookie
    /// when the user follows a link from another site; `None` removes a layer of CSRF defence.
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.config.cookie.same_site = same_site;
        self
    }

    /// Lets unsafe requests under `path_prefix` (a path, or everything below it) through without
    /// the cross-site check, for endpoints other sites are meant to call, such as webhooks.
    /// Such routes must not rely on the session cookie for authority.
    pub fn csrf_exempt(mut self, path_prefix: impl Into<String>) -> Self {
        self.config.csrf.exempt_prefixes.push(path_prefix.into());
        self
    }

    /// Accepts unsafe requests whose `Origin` is exactly `origin` (for example
    /// `https://admin.example.com`), besides the app's own host.
    pub fn csrf_trusted_origin(mut self, origin: impl Into<String>) -> Self {
        let origin = crate::csrf::normalize_origin(&origin.into());
        self.config.csrf.trusted_origins.push(origin);
        self
    }

    /// Turns cross-site request protection off, for apps that enforce it elsewhere.
    pub fn disable_csrf_protection(mut self) -> Self {
        self.config.csrf.disabled = true;
        self
    }

    /// Proxies whose forwarding header is believed for the client address recorded at login
    /// (and shown by [`Session::list_sessions`](crate::Session::list_sessions)). Without any, it
    /// is the TCP peer: behind a reverse proxy, the proxy.
    pub fn trust_proxies(mut self, proxies: impl IntoIterator<Item = std::net::IpAddr>) -> Self {
        self.config.proxies.addresses = proxies.into_iter().map(|ip| ip.to_canonical()).collect();
        self
    }

    /// The one header the trusted proxies write (default `X-Forwarded-For`).
    pub fn client_ip_header(mut self, header: ClientIpHeader) -> Self {
        self.config.proxies.header = header;
        self
    }

    /// Believes the forwarding header on connections without a peer address, as from a reverse
    /// proxy on a unix socket.
    pub fn trust_unix_socket(mut self) -> Self {
        self.config.proxies.unix_socket = true;
        self
    }

    /// Finishes the configuration.
    pub fn build(self) -> LoginMiddleware {
        let cookie = &self.config.cookie;
        let prefixed = cookie.name.starts_with("__Host-") || cookie.name.starts_with("__Secure-");
        if prefixed && !cookie.secure {
            tracing::warn!(
                cookie = %cookie.name,
                "browsers reject a __Host- or __Secure- cookie without Secure; logins will not stick"
            );
        }
        LoginMiddleware::from_parts(Sessions {
            store: self.store,
            config: Arc::new(self.config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_never_passes_the_absolute_end() {
        let config = Config::default();
        let now = SystemTime::now();
        let far = now + Duration::from_secs(86_400);
        let near = now + Duration::from_secs(60);
        assert_eq!(config.idle_deadline(now, far), now + DEFAULT_IDLE_TIMEOUT);
        assert_eq!(config.idle_deadline(now, near), near);
    }

    #[test]
    fn freshness_window_is_inclusive_and_tolerates_clock_steps() {
        let config = Config::default();
        let now = SystemTime::now();
        assert!(config.is_fresh(now - DEFAULT_FRESH_WINDOW, now));
        assert!(!config.is_fresh(now - DEFAULT_FRESH_WINDOW - Duration::from_secs(1), now));
        // A password entered "in the future" by a slightly fast clock is fresh; by a clock
        // minutes ahead, it is not.
        assert!(config.is_fresh(now + Duration::from_secs(5), now));
        assert!(!config.is_fresh(now + Duration::from_secs(600), now));
    }

    #[test]
    fn refresh_only_when_the_gain_reaches_a_tenth_of_the_window() {
        let config = Config::default();
        let now = SystemTime::now();
        let tenth = DEFAULT_IDLE_TIMEOUT / 10;
        let step = Duration::from_millis(1);
        assert!(!config.worth_refreshing(now, now));
        assert!(!config.worth_refreshing(now, now + tenth - step));
        assert!(config.worth_refreshing(now, now + tenth));
        assert!(!config.worth_refreshing(now + tenth, now));
    }
}
