//! The middleware's settings and the builder that collects them.

use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::SameSite;

use super::client::{ClientIpHeader, Proxies};
use super::cookie::CookieConfig;
use super::csrf::CsrfConfig;
use super::origin::Origin;
use super::LoginMiddleware;
use crate::engine::events::{EventSink, Handler, SecurityEvent};
use crate::engine::links::LinkSettings;
use crate::engine::{SessionEngine, SessionRules, Timeouts};
use crate::record::ActivityLimits;
use crate::store::{DynStore, SessionStore};

/// How many security events may wait for the handlers by default.
const DEFAULT_EVENT_QUEUE: usize = 1024;

/// What the web layer needs besides the engine: how the cookie looks, which requests count as
/// cross-site, and whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct WebConfig {
    pub(crate) cookie: CookieConfig,
    pub(crate) csrf: CsrfConfig,
    pub(crate) proxies: Proxies,
}

/// Configures a [`LoginMiddleware`]. Made by [`LoginMiddleware::builder`].
///
/// ```
/// use std::time::Duration;
/// use actix_login::{LoginMiddleware, MemoryStore, SameSite, Timeouts};
///
/// let middleware = LoginMiddleware::builder(MemoryStore::new())
///     .timeouts(Timeouts::new(Duration::from_secs(15 * 60), Duration::from_secs(8 * 60 * 60)))
///     .cookie_same_site(SameSite::Strict)
///     .build();
/// ```
#[must_use]
pub struct LoginMiddlewareBuilder {
    store: Arc<dyn DynStore>,
    rules: SessionRules,
    config: WebConfig,
    handlers: Vec<Handler>,
    event_queue: usize,
}

impl LoginMiddlewareBuilder {
    pub(crate) fn new(store: impl SessionStore) -> Self {
        Self {
            store: Arc::new(store),
            rules: SessionRules::default(),
            config: WebConfig::default(),
            handlers: Vec::new(),
            event_queue: DEFAULT_EVENT_QUEUE,
        }
    }

    /// Calls `handler` with every [security event](crate::events): logins (with how, and
    /// whether from a new device), failed and throttled attempts, logouts, revocations,
    /// password changes, tokens, one-time links. Handlers run in the order they were added, on
    /// one thread of their own that drains a bounded queue (see
    /// [`event_queue`](Self::event_queue)): a request never waits for them, and a slow or
    /// panicking handler costs requests nothing. Blocking work in a handler (a file, a
    /// database, a mail) is fine; it delays only later events.
    ///
    /// ```
    /// use actix_login::events::{EventKind, SecurityEvent};
    /// use actix_login::{LoginMiddleware, MemoryStore};
    ///
    /// let middleware = LoginMiddleware::builder(MemoryStore::new())
    ///     .on_event(|event: &SecurityEvent| {
    ///         if let EventKind::LoginFailed = event.kind {
    ///             eprintln!("failed login for {:?} from {:?}", event.user_id, event.ip);
    ///         }
    ///     })
    ///     .build();
    /// ```
    pub fn on_event(mut self, handler: impl Fn(&SecurityEvent) + Send + 'static) -> Self {
        self.handlers.push(Box::new(handler));
        self
    }

    /// How many events may wait for the [handlers](Self::on_event) (default 1024). An event
    /// that finds the queue full is dropped and counted
    /// ([`LoginMiddleware::events_dropped`]); values below 1 count as 1. While events keep
    /// coming the handlers' thread looks at the queue about once a millisecond, so the queue
    /// must hold what the app emits in a millisecond or so: a very small one drops events
    /// under load even with fast handlers.
    pub fn event_queue(mut self, capacity: usize) -> Self {
        self.event_queue = capacity.max(1);
        self
    }

    /// How many entries each user's [activity log](crate::Sessions::activity) keeps (default
    /// 100; the oldest go first) and how long a log is kept after its newest entry (default
    /// 90 days). `max_entries` 0 turns the log off, for a custom store that keeps none. On
    /// Redis the log is a list per user, `{prefix}:a:{user id}`; a login adds three commands
    /// (`LPUSH`, `LTRIM`, `PEXPIRE`) sent beside its other ones, with no round trip of their
    /// own, and each entry costs about its own bytes of Redis memory (a desktop browser's
    /// login, about 200 bytes; with the key's own overhead shared by two entries, about 260
    /// each). A page that starts after an entry (`before`) is found by reading the list from
    /// its newest end, one round trip per 100 entries, so a large cap makes deep pages (and
    /// an id that is not in the log) cost more reads. A failed write is logged and never
    /// fails what it records.
    pub fn activity_log(mut self, max_entries: usize, keep_for: Duration) -> Self {
        self.rules.set_activity_log(Some(ActivityLimits {
            max_entries,
            keep_for: keep_for.max(Duration::from_secs(1)),
        }));
        self
    }

    /// How long a browser login lives (default [`Timeouts::BROWSER`]: 30 minutes idle, 12
    /// hours in all). An idle session ends between 90 % and 100 % of the idle timeout after
    /// its last request, and never after the absolute one.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.rules.set_idle_timeout(timeouts.idle);
        self.rules.set_absolute_timeout(timeouts.absolute);
        self
    }

    /// How long a remembered login lives ("keep me signed in", [`Login::remember`](crate::Login::remember);
    /// default [`Timeouts::REMEMBERED`]: 7 days idle, 30 days in all, the longest NIST SP
    /// 800-63B allows between logins for a single-factor session). Its cookie expires with its
    /// idle deadline.
    pub fn remember_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.rules.set_remember_idle_timeout(timeouts.idle);
        self.rules.set_remember_absolute_timeout(timeouts.absolute);
        self
    }

    /// How long a session without a login lives (default [`Timeouts::ANONYMOUS`]: 15 minutes
    /// idle, 4 hours in all). Such a session starts with a visitor's first write of
    /// [session data](crate::Session::insert).
    pub fn anonymous_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.rules.set_anonymous_idle_timeout(timeouts.idle);
        self.rules.set_anonymous_absolute_timeout(timeouts.absolute);
        self
    }

    /// How recently the password must have been entered for routes wrapped in
    /// [`Require::fresh`](crate::Require::fresh) (default 10 minutes). Older sessions get
    /// `403 {"error":"reauth_required"}` until [`Session::reauthenticate`](crate::Session::reauthenticate).
    pub fn fresh_window(mut self, window: Duration) -> Self {
        self.rules.set_fresh_window(window);
        self
    }

    /// How long a login has between its password and its [second factor](crate::two_factor)
    /// (default 5 minutes, at least a second): the session a login with
    /// [`SecondFactor::Due`](crate::two_factor::SecondFactor::Due) starts ends then, idle or
    /// not, and the user starts again with the password.
    pub fn second_factor_timeout(mut self, timeout: Duration) -> Self {
        self.rules.set_second_factor_timeout(timeout);
        self
    }

    /// The most logins one user may have at once, in browsers and as bearer tokens from
    /// [`Session::login_bearer`](crate::Session::login_bearer) (default 100). A login beyond it
    /// ends that user's oldest other logins; it never ends the session it has just created,
    /// and a login whose session newer logins ended meanwhile answers
    /// `409 {"error":"login_superseded"}` instead of a dead cookie. Personal access tokens do
    /// not count: they have [a limit of their own](Self::max_tokens_per_user), so they can
    /// never push their owner's logins out. Values below 1 count as 1.
    pub fn max_sessions_per_user(mut self, max: usize) -> Self {
        self.rules.set_max_sessions_per_user(max);
        self
    }

    /// The most personal access tokens one user may have at once (default 20). Creating one more
    /// answers `409 {"error":"too_many_tokens"}`; the user revokes one first. Tokens do not
    /// count toward [`max_sessions_per_user`](Self::max_sessions_per_user). 0 forbids tokens.
    pub fn max_tokens_per_user(mut self, max: usize) -> Self {
        self.rules.set_max_tokens_per_user(max);
        self
    }

    /// How many personal access tokens one user may create per `window` (default 10 per
    /// hour). One more answers
    /// `429 {"error":"token_rate_limited"}` with `Retry-After`. The count is kept in the
    /// store's counters (the ones that bound [anonymous sessions](Self::anonymous_sessions_per_minute)),
    /// so it holds across app instances; on a store without counters, token creation fails
    /// with `503`.
    pub fn token_creation_limit(mut self, max: u32, window: Duration) -> Self {
        self.rules.set_token_creation_limit(max, window);
        self
    }

    /// How long [one-time links](crate::links) live and how many may be issued per account,
    /// mail address and client address (defaults in the table on [`LinkSettings`]). The counts
    /// are kept in the store's counters, like the [token creation limit](Self::token_creation_limit).
    /// Credentials versions are kept at least as long as the longest lifetime, so that a
    /// password change ends every link issued before it.
    pub fn one_time_links(mut self, settings: LinkSettings) -> Self {
        self.rules.set_links(settings);
        self
    }

    /// How many sessions without a login may start per minute: at most `per_address` from one
    /// client address (an IPv4 address or an IPv6 /64; the address as
    /// [`trust_proxies`](Self::trust_proxies) resolves it), and `shared` more in all, across
    /// every app instance sharing the store, for networks that have used up their fair share
    /// (defaults 20 and 1000). A visitor past a bound gets `429 {"error":"too_many_sessions"}`
    /// with `Retry-After` instead of a session; logins are never counted. See also
    /// [`anonymous_sessions_per_network`](Self::anonymous_sessions_per_network).
    ///
    /// Bounds are fair across networks (an IPv4 /24, an IPv6 /48) and regions (an IPv4 /16,
    /// an IPv6 /32, a provider's allocation). Every network may start `per_address` sessions a
    /// minute (its fair share), and every region one network's bound, whatever anyone else
    /// does; only starts past either share draw on the `shared` allowance, up to the network's
    /// own bound. So a flood from any number of addresses and networks cannot keep a visitor
    /// from another region from getting a session: at worst the flooding networks use up
    /// `shared` among themselves. Visitors whose address is unknown (no trusted proxy names
    /// it) draw on `shared` alone.
    ///
    /// There is no bound in all that strangers could spend, so the number of anonymous
    /// sessions follows the number of regions sending them: per minute at most
    /// `per_network` × (regions) + `shared`. Abandoned sessions end after the 15-minute
    /// [idle timeout](Self::anonymous_timeouts), so with the defaults a bot herd in `n`
    /// regions keeps at most 15 × (100 `n` + 1000) of them waiting for it (1.5 million for a
    /// thousand /16s), each with at most [`max_data_size`](Self::max_data_size) of data; one
    /// that keeps them alive is still bounded by the 4-hour absolute lifetime. Lower the
    /// bounds (or the idle timeout) where memory is tight.
    pub fn anonymous_sessions_per_minute(mut self, per_address: u32, shared: u32) -> Self {
        self.rules.set_anonymous_limits(per_address, shared);
        self
    }

    /// How many sessions without a login may start per minute from one network: an IPv4 /24
    /// or an IPv6 /48 (default 100). Its first `per_address` starts (see
    /// [`anonymous_sessions_per_minute`](Self::anonymous_sessions_per_minute)) are its own;
    /// the rest draw on the allowance networks past their fair share share. A region (an IPv4
    /// /16, an IPv6 /32) has a fair share of `per_network` a minute in the same way.
    pub fn anonymous_sessions_per_network(mut self, per_network: u32) -> Self {
        self.rules.set_anonymous_per_network(per_network);
        self
    }

    /// The most data one session may hold (default 64 KiB), counting each value's name and JSON
    /// text in bytes plus 64 bytes for what the store spends on keeping it (a Redis hash field
    /// costs about that beyond its bytes), so that many tiny values cannot take several times
    /// the limit in memory: the default allows at most about 1,000 values.
    /// A write past it fails with `413 {"error":"session_data_too_large"}` and changes nothing;
    /// a write that shrinks the data always succeeds.
    pub fn max_data_size(mut self, bytes: usize) -> Self {
        self.rules.set_max_data_size(bytes);
        self
    }

    /// The cookie name (default `__Host-id`, or `__Secure-id` with a
    /// [`cookie_domain`](Self::cookie_domain)).
    ///
    /// Browsers accept a `__Host-` cookie only if it is `Secure`, has `Path=/` and no `Domain`,
    /// which is what this crate sends unless [`cookie_secure(false)`](Self::cookie_secure) is set.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie.name = name.into();
        self.config.cookie.named = true;
        self
    }

    /// Sends the cookie with `Domain=domain`, so every subdomain of `domain` receives it (for
    /// an app spread over `app.example.com` and `admin.example.com`, say `example.com`).
    ///
    /// The default name becomes `__Secure-id`: `__Host-` forbids a domain, and a `__Host-`
    /// name set with [`cookie_name`](Self::cookie_name) together with a domain is refused by
    /// [`try_build`](Self::try_build) (and [`build`](Self::build) panics).
    ///
    /// What it costs: every host under `domain` then receives the session cookie, so any of
    /// them that is compromised, or serves someone else's content, can read it from the
    /// requests it gets and act as the user; and any of them can set a cookie of the same
    /// name for `domain`, which this crate then sees twice and ignores (the visitor looks
    /// logged out) rather than trusting either. The cross-site checks do not widen with it:
    /// a sibling subdomain is *same-site* but another origin, so its unsafe requests are
    /// refused unless you add it with [`csrf_trusted_origin`](Self::csrf_trusted_origin).
    /// Use a domain only when every host under it is yours and equally trusted.
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.cookie.domain = Some(domain.into());
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
    /// `https://admin.example.com`: scheme, host and port, the port defaulting to the scheme's),
    /// besides the app's own origin. A value that is not such an origin is refused with an error
    /// in the log and trusts nothing.
    ///
    /// The app's own origin is its `Host` with the scheme the client used, which behind a proxy
    /// that terminates TLS comes from `X-Forwarded-Proto` or `Forwarded`; if yours sends
    /// neither, name your public origin here. (This fallback only matters for browsers that
    /// send no `Sec-Fetch-Site`.)
    pub fn csrf_trusted_origin(mut self, origin: impl Into<String>) -> Self {
        let origin = origin.into();
        match Origin::parse(&origin) {
            Some(parsed) => self.config.csrf.trusted_origins.push(parsed),
            // A typo here must not widen what passes, and the builder has no error to return.
            None => tracing::error!(
                origin,
                "csrf_trusted_origin ignored: not an origin like https://host[:port]"
            ),
        }
        self
    }

    /// Turns cross-site request protection off, for apps that enforce it elsewhere.
    pub fn disable_csrf_protection(mut self) -> Self {
        self.config.csrf.disabled = true;
        self
    }

    /// Proxies whose forwarding header ([`client_ip_header`](Self::client_ip_header)) is
    /// believed for the client's address. Without any, the client is the TCP peer: behind a
    /// reverse proxy, the proxy.
    ///
    /// This one setting serves everything that needs the address: the address recorded at login
    /// (and shown by [`Session::list_sessions`](crate::Session::list_sessions)) and the
    /// [`LoginThrottle`](crate::throttle::LoginThrottle)'s per-address counters. A client cannot spoof the
    /// header to dodge a limit: only hops written by these proxies are believed.
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
    ///
    /// # Panics
    /// If the configuration is one [`try_build`](Self::try_build) refuses: a bug in the app's
    /// setup, caught when the server starts, before any request.
    pub fn build(self) -> LoginMiddleware {
        match self.try_build() {
            Ok(middleware) => middleware,
            Err(err) => panic!("{err}"),
        }
    }

    /// Finishes the configuration, or says what is wrong with it: a cookie domain that is not
    /// a domain name, or a `__Host-` cookie name with a domain (or, with
    /// [event handlers](Self::on_event), that their thread could not start).
    pub fn try_build(mut self) -> Result<LoginMiddleware, ConfigError> {
        self.config.cookie.settle().map_err(ConfigError)?;
        let cookie = &self.config.cookie;
        let prefixed = cookie.name.starts_with("__Host-") || cookie.name.starts_with("__Secure-");
        if prefixed && !cookie.secure {
            tracing::warn!(
                cookie = %cookie.name,
                "browsers reject a __Host- or __Secure- cookie without Secure; logins will not stick"
            );
        }
        let events = EventSink::start(self.handlers, self.event_queue)
            .map_err(|err| ConfigError(format!("could not start the events thread: {err}")))?;
        let engine = SessionEngine::shared(self.store, self.rules).with_events(events);
        Ok(LoginMiddleware::from_parts(engine, self.config))
    }
}

/// A [`LoginMiddlewareBuilder`] setting that cannot work, from
/// [`try_build`](LoginMiddlewareBuilder::try_build).
#[derive(Debug, Clone, thiserror::Error)]
#[error("LoginMiddleware configuration: {0}")]
pub struct ConfigError(String);
