//! Brute-force throttling for login forms.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, FORWARDED};
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use crate::store::{DynThrottleStore, ThrottleStore};
use crate::Error;

/// The longest username looked at, in bytes. Longer ones are refused before any work.
pub const MAX_USERNAME_BYTES: usize = 1024;

/// How many failed logins are allowed within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Failures allowed; the next attempt within the window is refused.
    pub max_failures: u32,
    /// How long a count lasts from its first failure.
    pub window: Duration,
}

impl Limit {
    /// `max_failures` failures per `window`.
    pub const fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
        }
    }
}

/// Counts failed logins in the store and refuses further attempts past a limit, with
/// `429 Too Many Requests` and `Retry-After`.
///
/// Three counters apply to every attempt, each with its own [`Limit`]:
///
/// | counter | default | stops |
/// |---|---|---|
/// | account and client address | 5 per 15 minutes | guessing one password from one place |
/// | client address | 20 per 15 minutes | trying many accounts from one place (credential stuffing) |
/// | account | 100 per hour | guessing one password from many places (NIST SP 800-63B's ceiling) |
///
/// A success clears the first counter, so a user who mistyped can log in once they get it
/// right, while an attacker at another address cannot lock them out with less than the
/// account-wide 100 failures an hour. Unknown usernames are counted exactly like real ones,
/// so the throttle reveals nothing about which accounts exist; usernames are compared
/// case-insensitively and stored only as hashes. While a limit is reached, even the right
/// password is refused, so the answer is no oracle.
///
/// Each attempt is counted *before* the password is checked, so concurrent guesses cannot slip
/// past a limit, and counted attempts that are refused by a limit are taken back, so hammering
/// while blocked does not add to the account-wide count. A [`LoginAttempt`] dropped without
/// [`succeeded`](LoginAttempt::succeeded) counts as a failure.
///
/// The client address is the TCP peer unless the peer is one of the
/// [trusted proxies](LoginThrottle::trust_proxies); then it is the nearest untrusted address in
/// `Forwarded` or `X-Forwarded-For`. A client cannot spoof those headers to reset or dodge a
/// limit.
///
/// ```no_run
/// use actix_login::{password, LoginThrottle, RedisStore, Session};
/// use actix_web::{web, HttpRequest, HttpResponse};
/// # #[derive(serde::Deserialize)] struct Credentials { username: String, password: String }
/// # fn stored_hash(_: &str) -> Option<String> { None }
///
/// async fn login(
///     req: HttpRequest,
///     throttle: web::Data<LoginThrottle>,
///     session: Session,
///     creds: web::Json<Credentials>,
/// ) -> actix_web::Result<HttpResponse> {
///     let attempt = throttle.attempt(&req, &creds.username).await?; // 429 past a limit
///     let hash = stored_hash(&creds.username);
///     if !password::verify(&creds.password, hash.as_deref()).await? {
///         attempt.failed().await?;
///         return Ok(HttpResponse::Unauthorized().finish());
///     }
///     attempt.succeeded().await?;
///     session.login(creds.username.clone(), &creds.username).await?;
///     Ok(HttpResponse::Ok().finish())
/// }
///
/// # async fn setup(store: RedisStore) {
/// let throttle = web::Data::new(LoginThrottle::new(store.clone()));
/// # }
/// ```
#[derive(Clone)]
pub struct LoginThrottle {
    store: Arc<dyn DynThrottleStore>,
    rules: Arc<Rules>,
}

#[derive(Clone, Debug)]
struct Rules {
    per_account_and_client: Limit,
    per_client: Limit,
    per_account: Limit,
    trusted_proxies: Vec<IpAddr>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// A throttle with the default limits, counting in `store`.
    pub fn new(store: impl ThrottleStore) -> Self {
        Self {
            store: Arc::new(store),
            rules: Arc::new(Rules {
                per_account_and_client: Limit::new(5, Duration::from_secs(15 * 60)),
                per_client: Limit::new(20, Duration::from_secs(15 * 60)),
                per_account: Limit::new(100, Duration::from_secs(60 * 60)),
                trusted_proxies: Vec::new(),
            }),
        }
    }

    /// The limit for one account from one client address (default 5 per 15 minutes).
    #[must_use]
    pub fn per_account_and_client(self, limit: Limit) -> Self {
        self.with(|rules| rules.per_account_and_client = limit)
    }

    /// The limit for one client address across accounts (default 20 per 15 minutes). Clients
    /// behind one NAT share it; raise it where many users share an address.
    #[must_use]
    pub fn per_client(self, limit: Limit) -> Self {
        self.with(|rules| rules.per_client = limit)
    }

    /// The limit for one account across client addresses (default 100 per hour).
    #[must_use]
    pub fn per_account(self, limit: Limit) -> Self {
        self.with(|rules| rules.per_account = limit)
    }

    /// Proxies whose `Forwarded` and `X-Forwarded-For` headers are believed. Without any, the
    /// TCP peer is the client.
    #[must_use]
    pub fn trust_proxies(self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        let proxies: Vec<IpAddr> = proxies.into_iter().collect();
        self.with(|rules| rules.trusted_proxies = proxies)
    }

    fn with(mut self, change: impl FnOnce(&mut Rules)) -> Self {
        change(Arc::make_mut(&mut self.rules));
        self
    }

    /// Counts a login attempt for `username` from the request's client, before the password is
    /// checked.
    ///
    /// # Errors
    /// [`Error::Throttled`] (429 with `Retry-After`) past a limit; [`Error::InvalidInput`] (400)
    /// for a username over [`MAX_USERNAME_BYTES`]; [`Error::Store`] (503) if the store fails,
    /// never a free pass.
    pub async fn attempt(&self, req: &HttpRequest, username: &str) -> Result<LoginAttempt, Error> {
        if username.len() > MAX_USERNAME_BYTES {
            return Err(Error::InvalidInput);
        }
        let client = client_address(req, &self.rules.trusted_proxies)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let account = account_hash(username);
        let counters = Counters {
            account_and_client: format!("ac:{}", short_hash(&format!("{account}|{client}"))),
            client: format!("c:{client}"),
            account: format!("a:{account}"),
        };
        let rules = &self.rules;
        let limits = [
            rules.per_account_and_client,
            rules.per_client,
            rules.per_account,
        ];
        let names = counters.all();
        let windows: Vec<(&str, Duration)> = names
            .iter()
            .zip(&limits)
            .map(|(name, limit)| (*name, limit.window))
            .collect();
        let counts = self.store.add(&windows, 1).await?;
        let retry_after = counts
            .iter()
            .zip(&limits)
            .filter(|((count, _), limit)| *count > i64::from(limit.max_failures))
            .map(|((_, ttl), _)| *ttl)
            .max();
        if let Some(retry_after) = retry_after {
            // A refused attempt is not a guess: take it back, so hammering while blocked does
            // not push the account-wide counter towards locking the real user out.
            self.store.add(&windows, -1).await?;
            tracing::warn!(
                account = &account[..8],
                client = %client,
                retry_after_secs = retry_after.as_secs(),
                "login throttled"
            );
            return Err(Error::Throttled {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        Ok(LoginAttempt {
            throttle: self.clone(),
            counters,
            account,
            client,
        })
    }
}

struct Counters {
    account_and_client: String,
    client: String,
    account: String,
}

impl Counters {
    fn all(&self) -> [&str; 3] {
        [&self.account_and_client, &self.client, &self.account]
    }
}

/// One counted login attempt. Report how it went; dropping it counts as a failure.
#[must_use = "report the outcome with `failed` or `succeeded`"]
pub struct LoginAttempt {
    throttle: LoginThrottle,
    counters: Counters,
    account: String,
    client: String,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt").finish_non_exhaustive()
    }
}

impl LoginAttempt {
    /// The credentials were wrong (or the account unknown or disabled): the attempt stays
    /// counted.
    ///
    /// # Errors
    /// None today; the signature leaves room for stores that record failures separately.
    pub async fn failed(self) -> Result<(), Error> {
        tracing::info!(
            account = &self.account[..8],
            client = %self.client,
            "login failed"
        );
        Ok(())
    }

    /// The credentials were right: this attempt no longer counts, and the failures of this
    /// account from this client are forgotten.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub async fn succeeded(self) -> Result<(), Error> {
        let rules = &self.throttle.rules;
        let store = &self.throttle.store;
        store.reset(&self.counters.account_and_client).await?;
        let others = [
            (self.counters.client.as_str(), rules.per_client.window),
            (self.counters.account.as_str(), rules.per_account.window),
        ];
        store.add(&others, -1).await?;
        Ok(())
    }
}

/// The hex SHA-256 of the username as the throttle sees it: trimmed and lowercased, so that
/// `Alice` and `alice ` share a counter.
fn account_hash(username: &str) -> String {
    short_hash(&username.trim().to_lowercase())
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
/// address in the forwarding chain that is not one.
pub(crate) fn client_address(req: &HttpRequest, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let chain = forwarded_chain(req.headers());
    // Walk from the nearest hop outwards; everything before the first untrusted hop was written
    // by our own proxies, everything after it by whoever the client is.
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return Some(*ip),
            // A hop we cannot read: stop at the last proxy we trust rather than guess.
            None => break,
        }
    }
    Some(peer)
}

/// The addresses a request passed through, farthest first, from `Forwarded` if present, else
/// `X-Forwarded-For`. `None` marks an entry that is not an IP address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(FORWARDED)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|header| header.split(','))
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.eq_ignore_ascii_case("for").then_some(value)
                    })
                    .and_then(parse_node)
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|header| header.split(','))
        .map(parse_node)
        .collect()
}

/// An address from a `Forwarded` node or `X-Forwarded-For` entry: `192.0.2.1`,
/// `"192.0.2.1:8080"`, `"[2001:db8::1]:443"` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let req = TestRequest::default()
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4"))
            .to_http_request();
        assert_eq!(client_address(&req, &[]), Some(ip("203.0.113.9")));
        assert_eq!(
            client_address(&req, &[ip("203.0.113.9")]),
            Some(ip("1.2.3.4"))
        );
    }

    #[test]
    fn spoofed_entries_left_of_the_real_client_are_ignored() {
        // The client sent "X-Forwarded-For: 6.6.6.6"; our proxy appended the real address.
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.3"))
            .to_http_request();
        let trusted = [ip("10.0.0.2"), ip("10.0.0.3")];
        assert_eq!(client_address(&req, &trusted), Some(ip("198.51.100.4")));
    }

    #[test]
    fn forwarded_header_takes_precedence_and_parses_ports_and_brackets() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:5000".parse().unwrap())
            .insert_header((
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#,
            ))
            .insert_header(("x-forwarded-for", "9.9.9.9"))
            .to_http_request();
        assert_eq!(
            client_address(&req, &[ip("10.0.0.2")]),
            Some(ip("2001:db8::7"))
        );
    }

    #[test]
    fn unreadable_hops_stop_the_walk_at_the_proxy() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4, garbage"))
            .to_http_request();
        assert_eq!(
            client_address(&req, &[ip("10.0.0.2")]),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn usernames_share_a_counter_regardless_of_case_and_padding() {
        assert_eq!(account_hash("Alice "), account_hash("alice"));
        assert_ne!(account_hash("alice"), account_hash("bob"));
    }
}
