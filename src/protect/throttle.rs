//! Brute-force throttling for login forms.

use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::Cookie;
use actix_web::{HttpMessage as _, HttpRequest};
use unicode_normalization::UnicodeNormalization as _;

use super::counter::short_hash;
use super::device;
use crate::engine::address_bucket;
use crate::engine::events::{DeviceCheck, EventKind, SecurityEvent};
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::store::{Admission, Counter, DynThrottleStore, ThrottleStore};
use crate::web::{user_agent_of, Provenance, RequestSession};

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
/// so the throttle reveals nothing about which accounts exist. Usernames are compared after
/// NFKC normalisation and lowercasing and stored only as hashes; if your app lets one account
/// log in under several names (username or email), pass its canonical key instead. While a
/// limit is reached, even the right password is refused, so the answer is no oracle; only a
/// [known browser](#known-browsers) is let through.
///
/// Each attempt is checked against all three limits and counted in one atomic step *before* the
/// password is checked, so concurrent guesses cannot slip past a limit, and an attempt refused
/// by a limit counts nowhere, so hammering while blocked does not add to the account-wide count.
/// A [`LoginAttempt`] dropped without [`succeeded`](LoginAttempt::succeeded) counts as a failure.
/// A cross-site login (see [`LoginMiddleware`](crate::LoginMiddleware)) is refused before it is
/// counted, so a hostile page cannot spend a user's attempts.
///
/// The throttle runs under [`LoginMiddleware`](crate::LoginMiddleware) and takes the client's
/// address from it: the TCP peer unless the peer is one of the middleware's
/// [trusted proxies](crate::LoginMiddlewareBuilder::trust_proxies); then the nearest untrusted
/// address in the one header those proxies write. One setting, so the address recorded at login
/// and the address counted here always agree, and a client cannot spoof the header to reset or
/// dodge a limit. IPv6 clients are counted per /64 network, since one host commonly holds a
/// whole /64; IPv4-mapped IPv6 addresses count as the IPv4 address.
///
/// # Known browsers
///
/// The account-wide ceiling is what stops guessing from many addresses, but anyone can reach
/// it, and a single IPv6 allocation (a /56 holds 256 /64s) has addresses enough to keep an
/// account locked for as long as its holder likes. So, following OWASP's device cookies, a
/// successful login hands out a device token: [`LoginAttempt::succeeded`] returns it as an
/// `HttpOnly; Secure; SameSite=Strict` cookie (`__Host-device`) for the handler to set. An
/// attempt that brings a valid token for the account it names is counted against that token
/// alone ([`per_device`](Self::per_device)), not against the address or the account, so the
/// account's owner still gets in from a browser that logged in before while strangers stay
/// throttled. Its password check also goes first in the hashing queue
/// ([`LoginAttempt::lane`], with [`PasswordHasher::verify_in`](crate::password::PasswordHasher::verify_in)),
/// so a flood of strangers' logins cannot make the owner wait either.
///
/// A token is bound to the account's *id*, which the app passes to [`attempt`](Self::attempt)
/// after looking the username up, not to the name typed: a renamed account keeps its browsers,
/// and a new account that takes a freed name does not inherit them. The store keeps only a
/// hash of the token and the id; an unknown, expired or forged token, or another account's,
/// counts as none. A token that fails its limit is revoked, and each success replaces the
/// token the browser came with.
///
/// ```no_run
/// use actix_login::{password, RedisStore, Session};
/// use actix_login::throttle::LoginThrottle;
/// use actix_web::{web, HttpRequest, HttpResponse};
/// # #[derive(serde::Deserialize)] struct Credentials { username: String, password: String }
/// # fn find_user(_: &str) -> Option<(String, String)> { None }
///
/// async fn login(
///     req: HttpRequest,
///     throttle: web::Data<LoginThrottle>,
///     session: Session,
///     creds: web::Json<Credentials>,
/// ) -> actix_web::Result<HttpResponse> {
///     // The account's id and hash, if there is one: looked up first, so the throttle can tell
///     // this account's browsers from everyone else.
///     let user = find_user(&creds.username);
///     let id = user.as_ref().map(|(id, _)| id.as_str());
///     let attempt = throttle.attempt(&req, &creds.username, id).await?; // 429 past a limit
///     let hash = user.as_ref().map(|(_, hash)| hash.as_str());
///     let hasher = password::PasswordHasher::new();
///     // A known browser goes first in the hashing queue; strangers may get 503 login_busy.
///     if !hasher.verify_in(attempt.lane(), &creds.password, hash).await? {
///         attempt.failed().await?;
///         return Ok(HttpResponse::Unauthorized().finish());
///     }
///     let device = attempt.succeeded().await?; // this browser gets in past the limits later
///     let id = id.unwrap_or_default().to_owned();
///     session.login(id, &creds.username).await?;
///     Ok(HttpResponse::Ok().cookie(device).finish())
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
    per_device: Limit,
    registrations_per_client: Limit,
    ipv6_prefix_len: u8,
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
                per_device: Limit::new(10, Duration::from_secs(30 * 24 * 60 * 60)),
                registrations_per_client: Limit::new(10, Duration::from_secs(60 * 60)),
                ipv6_prefix_len: 64,
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

    /// How long a device token lives after the login that issued it, and how many attempts it
    /// may fail before it is revoked (default 10 failures, 30 days). See
    /// [known browsers](LoginThrottle#known-browsers).
    #[must_use]
    pub fn per_device(self, limit: Limit) -> Self {
        self.with(|rules| rules.per_device = limit)
    }

    /// How many sign-ups one client address may attempt (default 10 per hour), successful or
    /// not; see [`registration`](Self::registration). Raise it where many users share an
    /// address.
    #[must_use]
    pub fn registrations_per_client(self, limit: Limit) -> Self {
        self.with(|rules| rules.registrations_per_client = limit)
    }

    /// How many leading bits of an IPv6 address identify one client (default 64, clamped to
    /// 32..=128).
    #[must_use]
    pub fn ipv6_prefix_len(self, bits: u8) -> Self {
        self.with(|rules| rules.ipv6_prefix_len = bits.clamp(32, 128))
    }

    fn with(mut self, change: impl FnOnce(&mut Rules)) -> Self {
        change(Arc::make_mut(&mut self.rules));
        self
    }

    /// Counts a login attempt for `username` from the request's client, before the password is
    /// checked.
    ///
    /// `account` is the id of the account `username` names, as the app's lookup found it
    /// (`None` when there is no such account): the key the app logs the user in with, stable
    /// across renames. A device cookie counts only for the account with that id (see
    /// [known browsers](LoginThrottle#known-browsers)); the counters every stranger shares are
    /// keyed by the username, so unknown names count exactly like real ones. Pass `None` where
    /// device cookies must not lift the limits, as for a second factor.
    ///
    /// # Errors
    /// [`Error::Throttled`] (429 with `Retry-After`) past a limit; [`Error::InvalidInput`] (400)
    /// for a username over [`MAX_USERNAME_BYTES`]; [`Error::CrossSiteRequest`] (403) for a login
    /// the browser says comes from another site; [`Error::MissingMiddleware`] (500) without
    /// [`LoginMiddleware`](crate::LoginMiddleware), which knows the client's address;
    /// [`Error::Store`] (503) if the store fails, never a free pass.
    pub async fn attempt(
        &self,
        req: &HttpRequest,
        username: &str,
        account: Option<&str>,
    ) -> Result<LoginAttempt, Error> {
        if username.len() > MAX_USERNAME_BYTES {
            return Err(Error::InvalidInput);
        }
        let rules = &self.rules;
        let (client, witness) = self.witness(req)?;
        if account.is_some_and(|id| id.len() > MAX_USERNAME_BYTES) {
            return Err(Error::InvalidInput);
        }
        let id = account.map(str::to_owned);
        let account = account_hash(username);
        if let Some(device) = id.as_deref().and_then(|id| device::presented(req, id)) {
            let counter = Counter {
                name: &device,
                // The counter was created holding one: the login that issued the token.
                max: rules.per_device.max_failures.saturating_add(1),
                window: rules.per_device.window,
            };
            match self.store.admit_existing(counter).await? {
                Some(Admission::Admitted) => {
                    note_device(req, id.as_deref(), true);
                    return Ok(self.admitted(
                        account,
                        id,
                        client,
                        witness,
                        Charged::Device(device),
                    ));
                }
                Some(Admission::Refused { .. }) => {
                    tracing::warn!(
                        account = &account[..8],
                        client = %client,
                        "device token revoked after repeated failures"
                    );
                    self.store.reset(&device).await?;
                }
                // Unknown, expired, forged or another account's: a stranger, like any other.
                None => {}
            }
        }
        let counters = Counters {
            account_and_client: format!("ac:{}", short_hash(&format!("{account}|{client}"))),
            client: format!("c:{client}"),
            account: format!("a:{account}"),
        };
        let charged = [
            Counter {
                name: &counters.account_and_client,
                max: rules.per_account_and_client.max_failures,
                window: rules.per_account_and_client.window,
            },
            Counter {
                name: &counters.client,
                max: rules.per_client.max_failures,
                window: rules.per_client.window,
            },
            Counter {
                name: &counters.account,
                max: rules.per_account.max_failures,
                window: rules.per_account.window,
            },
        ];
        if let Admission::Refused { retry_after } = self.store.admit(&charged).await? {
            tracing::warn!(
                account = &account[..8],
                client = %client,
                retry_after_secs = retry_after.as_secs(),
                "login throttled"
            );
            let retry_after = retry_after.max(Duration::from_secs(1));
            witness.emit(
                id.as_deref(),
                EventKind::Throttled {
                    retry_after_secs: retry_after.as_secs(),
                },
            );
            return Err(Error::Throttled { retry_after });
        }
        note_device(req, id.as_deref(), false);
        Ok(self.admitted(account, id, client, witness, Charged::Strangers(counters)))
    }

    /// Counts a sign-up from the request's client against
    /// [`registrations_per_client`](Self::registrations_per_client). Call it first in a
    /// registration handler, before the password policy or any lookup: every attempt counts,
    /// so neither the hashing a sign-up costs nor the answer it gives ("name taken") can be
    /// had in bulk.
    ///
    /// ```no_run
    /// # use actix_login::password;
    /// # use actix_login::throttle::LoginThrottle;
    /// # use actix_web::{web, HttpRequest, HttpResponse};
    /// # #[derive(serde::Deserialize)] struct NewAccount { username: String, password: String }
    /// async fn register(
    ///     req: HttpRequest,
    ///     throttle: web::Data<LoginThrottle>,
    ///     form: web::Json<NewAccount>,
    /// ) -> actix_web::Result<HttpResponse> {
    ///     throttle.registration(&req).await?; // 429 past the limit
    ///     // Check the password policy, then hash before looking the name up, so that taken and
    ///     // free names cost the same.
    ///     let hash = password::hash_registration(&form.password).await?;
    ///     // ... insert the account; 409 if the name is taken
    /// #   let _ = hash;
    ///     Ok(HttpResponse::Created().finish())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`attempt`](Self::attempt): [`Error::Throttled`], [`Error::CrossSiteRequest`],
    /// [`Error::MissingMiddleware`], [`Error::Store`].
    pub async fn registration(&self, req: &HttpRequest) -> Result<(), Error> {
        let client = self.client(req)?;
        let name = format!("r:{client}");
        let limit = self.rules.registrations_per_client;
        let counter = Counter {
            name: &name,
            max: limit.max_failures,
            window: limit.window,
        };
        if let Admission::Refused { retry_after } = self.store.admit(&[counter]).await? {
            tracing::warn!(
                client = %client,
                retry_after_secs = retry_after.as_secs(),
                "registration throttled"
            );
            return Err(Error::Throttled {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        Ok(())
    }

    /// A device cookie for the account with id `account`, for a login proven without a
    /// password: a [sign-in link](crate::links) or a password reset that logs the browser in.
    /// Like the cookie [`LoginAttempt::succeeded`] returns, it lets this browser past the
    /// limits strangers fill (see [known browsers](LoginThrottle#known-browsers)). Send it only
    /// once the login it stands for has happened.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an id over [`MAX_USERNAME_BYTES`]; [`Error::Store`] if the
    /// store fails; [`Error::Random`] if the OS random generator does.
    pub async fn trust_device(&self, account: &str) -> Result<Cookie<'static>, Error> {
        if account.len() > MAX_USERNAME_BYTES {
            return Err(Error::InvalidInput);
        }
        device::issue(&*self.store, account, self.rules.per_device.window).await
    }

    /// The counter name for the request's client, refusing a request another site sent.
    fn client(&self, req: &HttpRequest) -> Result<String, Error> {
        Ok(self.witness(req)?.0)
    }

    /// [`client`](Self::client), with what the attempt's events say about the client.
    fn witness(&self, req: &HttpRequest) -> Result<(String, Witness), Error> {
        let state = RequestSession::of(&req.extensions(), req.path())?;
        if state.provenance() == Provenance::CrossSite {
            tracing::warn!("cross-site login refused");
            return Err(Error::CrossSiteRequest);
        }
        let client = state.client_ip().map_or_else(
            || "unknown".to_owned(),
            |ip| address_bucket(ip, self.rules.ipv6_prefix_len),
        );
        let witness = Witness {
            engine: state.engine().clone(),
            ip: state.client_ip().map(|ip| ip.to_string()),
            user_agent: user_agent_of(req),
        };
        Ok((client, witness))
    }

    fn admitted(
        &self,
        account: String,
        id: Option<String>,
        client: String,
        witness: Witness,
        charged: Charged,
    ) -> LoginAttempt {
        LoginAttempt {
            throttle: self.clone(),
            charged,
            account,
            id,
            client,
            witness,
        }
    }
}

/// Leaves in the request whether it brought a valid device cookie for the account `id`, for
/// the login's [security event](crate::events) (a new device or a known one).
fn note_device(req: &HttpRequest, id: Option<&str>, known: bool) {
    if let Some(account) = id {
        req.extensions_mut().insert(DeviceCheck {
            account: account.to_owned(),
            known,
        });
    }
}

/// Who made an attempt, for its events: the engine that records them, and the client.
struct Witness {
    engine: SessionEngine,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl Witness {
    fn event(&self, id: Option<&str>, kind: EventKind) -> SecurityEvent {
        SecurityEvent::new(id, kind).client(self.ip.as_deref(), self.user_agent.as_deref())
    }

    fn emit(&self, id: Option<&str>, kind: EventKind) {
        self.engine.emit(self.event(id, kind));
    }
}

/// Where an attempt was counted.
enum Charged {
    /// The three counters every client without a valid device token shares.
    Strangers(Counters),
    /// The device token's own counter, named here.
    Device(String),
}

struct Counters {
    account_and_client: String,
    client: String,
    account: String,
}

/// One counted login attempt. Report how it went; dropping it counts as a failure.
#[must_use = "report the outcome with `failed` or `succeeded`"]
pub struct LoginAttempt {
    throttle: LoginThrottle,
    charged: Charged,
    /// The hash of the folded username, for logs.
    account: String,
    /// The account's id, which device tokens are bound to.
    id: Option<String>,
    client: String,
    witness: Witness,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt").finish_non_exhaustive()
    }
}

impl LoginAttempt {
    /// The hashing queue's lane for this attempt's password check: [`Lane::KnownDevice`] when
    /// the request brought a valid device cookie for the account, so that strangers cannot
    /// queue its owner's login (one check per account at a time; the queue sends a second one
    /// among strangers); otherwise [`Lane::Stranger`]. Pass it to
    /// [`PasswordHasher::verify_in`](crate::password::PasswordHasher::verify_in).
    ///
    /// [`Lane::KnownDevice`]: crate::password::Lane::KnownDevice
    /// [`Lane::Stranger`]: crate::password::Lane::Stranger
    #[cfg(feature = "password")]
    pub fn lane(&self) -> crate::password::Lane {
        match self.charged {
            Charged::Device(_) => {
                // A valid device token implies the id it is bound to; the folded name's hash
                // stands in only for a caller that gave none.
                let owner = self.id.as_deref().unwrap_or(&self.account);
                crate::password::Lane::KnownDevice(crate::password::DeviceOwner::new(owner))
            }
            Charged::Strangers(_) => crate::password::Lane::Stranger,
        }
    }

    /// The credentials were wrong (or the account unknown or disabled): the attempt stays
    /// counted. Subscribers get a [`LoginFailed`](crate::events::EventKind::LoginFailed)
    /// event, and the account named to [`LoginThrottle::attempt`], if any, a `login_failed`
    /// entry in its [activity log](crate::Sessions::activity).
    ///
    /// # Errors
    /// None today; the signature leaves room for stores that record failures separately.
    pub async fn failed(self) -> Result<(), Error> {
        tracing::info!(
            account = &self.account[..8],
            client = %self.client,
            "login failed"
        );
        let event = self
            .witness
            .event(self.id.as_deref(), EventKind::LoginFailed);
        self.witness.engine.note(event).await;
        Ok(())
    }

    /// The password could not be checked at all, because the hashing queue turned it away
    /// ([`PasswordError::Busy`](crate::password::PasswordError::Busy)): the attempt counts
    /// nowhere, as if it had not been made, so that a user who retries during a flood of
    /// strangers' logins is not throttled for guesses they never made. Nothing was learnt about
    /// the password, so nothing is forgiven that a guess could have earned.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub async fn not_checked(self) -> Result<(), Error> {
        let store = &*self.throttle.store;
        match &self.charged {
            Charged::Strangers(counters) => {
                store
                    .release(&[
                        &counters.account_and_client,
                        &counters.client,
                        &counters.account,
                    ])
                    .await?;
            }
            Charged::Device(device) => store.release(&[device]).await?,
        }
        tracing::info!(
            account = &self.account[..8],
            client = %self.client,
            "login not checked: the hashing queue was full"
        );
        Ok(())
    }

    /// The credentials were right: this attempt no longer counts, and the failures of this
    /// account from this client are forgotten. Returns a new device cookie for this account,
    /// which the handler sets on its response so that this browser gets in even while strangers
    /// are throttled (see [known browsers](LoginThrottle#known-browsers)). The token the
    /// browser came with, if any, is revoked: each success hands out a fresh one. The new token
    /// is bound to the account id given to [`LoginThrottle::attempt`]; an attempt that named no
    /// account (a second factor, say) gets a cookie that removes the device cookie instead, so
    /// send it only from a password login.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; [`Error::Random`] if the OS random generator does.
    pub async fn succeeded(self) -> Result<Cookie<'static>, Error> {
        let store = &*self.throttle.store;
        match &self.charged {
            Charged::Strangers(counters) => {
                store.reset(&counters.account_and_client).await?;
                store
                    .release(&[&counters.client, &counters.account])
                    .await?;
            }
            Charged::Device(device) => store.reset(device).await?,
        }
        let Some(id) = &self.id else {
            return Ok(device::removal());
        };
        let lifetime = self.throttle.rules.per_device.window;
        device::issue(store, id, lifetime).await
    }
}

/// The hash of the username as the throttle sees it (see [`fold_username`]).
pub(super) fn account_hash(username: &str) -> String {
    short_hash(&fold_username(username))
}

/// The username as the throttle counts it: NFKC-normalised, lowercased, normalised again and
/// trimmed, so that `Alice`, `alice ` and fullwidth `ａｌｉｃｅ` share a counter. Trimming comes
/// last because normalising can produce a leading space (U+00A8 becomes a space and a combining
/// mark), and folding a folded name must give the same name, or one account has two counters.
pub(super) fn fold_username(username: &str) -> String {
    let lower = username.nfkc().collect::<String>().to_lowercase();
    lower.nfkc().collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_share_a_counter_across_case_padding_and_width() {
        assert_eq!(account_hash("Alice "), account_hash("alice"));
        assert_eq!(
            account_hash("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}"),
            account_hash("alice")
        );
        assert_ne!(account_hash("alice"), account_hash("bob"));
    }
}
