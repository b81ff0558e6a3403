//! One-time links: password reset, e-mail verification, e-mail change, sign-in by e-mail
//! link ("magic link") and "this wasn't me" (ending one session), each a secret URL that works
//! once.
//!
//! [`OneTimeLinks`] issues a link for an account and hands back its secret for the app to mail
//! (the crate sends no mail); a `GET` of the link [peeks](OneTimeLinks::peek) without using
//! it, and a `POST` [consumes](OneTimeLinks::consume) it. What happens then (a new password,
//! an address marked verified, a login) is the app's, with the crate's usual calls.
//!
//! # Safe defaults
//!
//! * **A secret of 256 bits** from the OS in the URL (43 base64url characters), never stored
//!   or logged: the store keeps a SHA-256 of it and its purpose, which cannot be turned back
//!   into a link. Malformed secrets are refused before any store command.
//! * **Single use**: using a link takes it from the store in one atomic step (`GETDEL` on
//!   Redis, one key per link, so on a Cluster too); of concurrent uses exactly one wins.
//! * **Short lives**: 1 hour for a password reset, 24 hours for an address to verify or
//!   change to, 15 minutes for a sign-in link, 24 hours to end a session
//!   ([`LinkSettings::lifetime`]).
//! * **Bound to its purpose**: the purpose goes into the stored key, so a reset link used
//!   as a sign-in link is not found, and is not used up by the attempt.
//! * **Bound to the account's credentials**: a link records the account's credentials
//!   version; a [password change](crate::Sessions::credentials_changed) (a reset included)
//!   ends every link issued before it, but for "this wasn't me" links (see below), which must
//!   outlive a password changed from the session they end.
//! * **Bound to its address**: [`LinkInfo::address`] is where the mail went; act on it only
//!   if it still is (or, for a change, is to become) the account's address.
//! * **No account oracle**: [`OneTimeLinks::issue`] does the same work for names no account
//!   has (it counts them, reads a credentials version and writes a link that no one can
//!   use), so answer `202` with one body either way and send the mail off the request's
//!   path.
//! * **Throttled**: 5 links an hour per account and per mail address, 30 per client address
//!   ([`LinkSettings`]); past a limit `429 {"error":"too_many_links"}` with `Retry-After`,
//!   for unknown names alike. Links the app sends of its own accord (a new sign-in's "this
//!   wasn't me") count toward none: they never take a reset link's place.
//! * **`GET` never uses a link**: mail scanners open links. `GET` answers what the link is
//!   for, a `POST` (from the page, or a script) uses it.
//! * **One answer for every bad link**: malformed, unknown, used, expired, of another purpose
//!   or older than the password are all `410 {"error":"invalid_link"}`
//!   ([`Error::InvalidLink`](crate::Error::InvalidLink)).
//!
//! # Password reset
//!
//! Look at the link first, check the new password and hash it, and only then use the link,
//! so that a refused password costs the user no new mail. The password change ends every
//! session of the account and every other link; logging the browser in afterwards is the
//! app's choice (with [`Session::login_with`](crate::Session::login_with), as for a sign-in
//! link below).
//!
//! ```no_run
//! use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
//! use actix_login::{password, Sessions};
//! use actix_web::{web, HttpResponse};
//! # struct Db;
//! # impl Db {
//! #     fn find(&self, _name: &str) -> Option<(String, String)> { None }
//! #     fn address_of(&self, _id: &str) -> String { String::new() }
//! #     fn set_password(&self, _id: &str, _hash: String) -> u64 { 1 }
//! # }
//! # fn mail(_to: &str, _url: String) {}
//! #[derive(serde::Deserialize)]
//! struct Ask { username: String }
//!
//! /// `POST /password-reset`: the same answer, in the same time, for every name.
//! async fn ask(links: OneTimeLinks, db: web::Data<Db>, form: web::Json<Ask>)
//!     -> actix_web::Result<HttpResponse> {
//!     let account = db.find(&form.username); // (id, address)
//!     let to = account.as_ref().map(|(id, address)| Recipient::new(id, address));
//!     if let Some(link) = links.issue(LinkPurpose::PasswordReset, &form.username, to).await? {
//!         let (_, address) = account.unwrap_or_default();
//!         // Off the request's path: a spawned task or a queue.
//!         mail(&address, format!("https://example.com/password-reset/{}", link.secret()));
//!     }
//!     Ok(HttpResponse::Accepted().finish())
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct NewPassword { password: String }
//!
//! /// `POST /password-reset/{secret}`.
//! async fn reset(
//!     links: OneTimeLinks,
//!     sessions: Sessions,
//!     db: web::Data<Db>,
//!     secret: web::Path<String>,
//!     form: web::Json<NewPassword>,
//! ) -> actix_web::Result<HttpResponse> {
//!     let link = links.peek(LinkPurpose::PasswordReset, &secret).await?; // 410 if bad
//!     // ... check the new password against your policy here ...
//!     let hash = password::hash(&form.password).await?;
//!     let used = links.consume(LinkPurpose::PasswordReset, &secret).await?; // 410 if raced
//!     if used.user_id() != link.user_id() || used.address() != db.address_of(used.user_id()) {
//!         return Err(actix_login::Error::InvalidLink.into());
//!     }
//!     let version = db.set_password(used.user_id(), hash);
//!     // Every session of the account ends, and every link issued before.
//!     sessions.credentials_changed(used.user_id(), version.to_string()).await?;
//!     Ok(HttpResponse::NoContent().finish())
//! }
//! ```
//!
//! # E-mail verification and e-mail change
//!
//! Issue a [`VerifyEmail`](LinkPurpose::VerifyEmail) link to the account's address after
//! sign-up, and a [`ChangeEmail`](LinkPurpose::ChangeEmail) link to the *new* address when a
//! logged-in user asks to change it (behind [`Require::fresh`](crate::Require::fresh)); the
//! account keeps its old address until the link is used. Remember the address of the latest
//! request and accept a link only for that one, so that asking for another address makes the
//! earlier links useless. An address another account has should get the same answer and the
//! same work as a free one (the quickstart issues the link all the same, drops its secret
//! and mails that address a notice instead), or the form tells anyone who has which address.
//!
//! ```no_run
//! use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
//! use actix_login::AuthUser;
//! use actix_web::{web, HttpResponse};
//! # #[derive(serde::Deserialize)] struct Profile { id: String }
//! # struct Db;
//! # impl Db {
//! #     fn address_of(&self, _id: &str) -> String { String::new() }
//! #     fn mark_verified(&self, _id: &str) {}
//! #     fn set_address(&self, _id: &str, _address: &str) {}
//! #     fn set_pending(&self, _id: &str, _address: &str) {}
//! #     fn pending(&self, _id: &str) -> Option<String> { None }
//! # }
//! # fn mail(_to: &str, _url: String) {}
//! /// `POST /verify-email/{secret}`.
//! async fn verify(links: OneTimeLinks, db: web::Data<Db>, secret: web::Path<String>)
//!     -> actix_web::Result<HttpResponse> {
//!     let used = links.consume(LinkPurpose::VerifyEmail, &secret).await?;
//!     // Only the address the account still has.
//!     if used.address() != db.address_of(used.user_id()) {
//!         return Err(actix_login::Error::InvalidLink.into());
//!     }
//!     db.mark_verified(used.user_id());
//!     Ok(HttpResponse::NoContent().finish())
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct NewAddress { address: String }
//!
//! /// `POST /email` from a logged-in user: a link to the new address.
//! async fn change(
//!     user: AuthUser<Profile>,
//!     links: OneTimeLinks,
//!     db: web::Data<Db>,
//!     form: web::Json<NewAddress>,
//! ) -> actix_web::Result<HttpResponse> {
//!     let to = Recipient::new(&user.id, &form.address);
//!     if let Some(link) = links.issue(LinkPurpose::ChangeEmail, &user.id, Some(to)).await? {
//!         db.set_pending(&user.id, &form.address); // the latest request wins
//!         mail(&form.address, format!("https://example.com/email/{}", link.secret()));
//!     }
//!     Ok(HttpResponse::Accepted().finish())
//! }
//!
//! /// `POST /email/{secret}`: the account switches to the address the link went to, if it is
//! /// the one the latest request named.
//! async fn confirm(links: OneTimeLinks, db: web::Data<Db>, secret: web::Path<String>)
//!     -> actix_web::Result<HttpResponse> {
//!     let used = links.consume(LinkPurpose::ChangeEmail, &secret).await?;
//!     if db.pending(used.user_id()).as_deref() != Some(used.address()) {
//!         return Err(actix_login::Error::InvalidLink.into());
//!     }
//!     db.set_address(used.user_id(), used.address());
//!     Ok(HttpResponse::NoContent().finish())
//! }
//! ```
//!
//! # Sign-in by e-mail link
//!
//! The `POST` logs in the browser that sends it, through the same
//! [`Session::login_with`](crate::Session::login_with) as a password: a new token, the
//! session cap, a refusal of cross-site logins, and the credentials version read before the
//! link is used, so a password change while it runs ends the new session too.
//!
//! ```
//! use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
//! use actix_login::{Login, LoginMiddleware, MemoryStore, Session};
//! use actix_web::{test, web, App, HttpResponse};
//!
//! async fn sign_in(links: OneTimeLinks, session: Session, secret: web::Path<String>)
//!     -> actix_web::Result<HttpResponse> {
//!     let link = links.peek(LinkPurpose::SignIn, &secret).await?;
//!     let version = "0"; // read it from your user table now, before the link is used
//!     let used = links.consume(LinkPurpose::SignIn, &secret).await?;
//!     if used.user_id() != link.user_id() {
//!         return Err(actix_login::Error::InvalidLink.into());
//!     }
//!     let login = Login::new(used.user_id(), &used.user_id()).credentials_version(version);
//!     session.login_with(login).await?;
//!     Ok(HttpResponse::Ok().finish())
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let middleware = LoginMiddleware::new(MemoryStore::new());
//! middleware.sessions().credentials_changed("7", "0").await.unwrap();
//! // What `POST /magic-link` does for the account with id 7, whose mail goes to ann@….
//! let to = Recipient::new("7", "ann@example.test");
//! let link = middleware.links().issue(LinkPurpose::SignIn, "ann", Some(to)).await.unwrap().unwrap();
//!
//! let app = test::init_service(
//!     App::new()
//!         .route("/magic-link/{secret}", web::post().to(sign_in))
//!         .wrap(middleware),
//! )
//! .await;
//! let post = || test::TestRequest::post().uri(&format!("/magic-link/{}", link.secret())).to_request();
//! let res = test::call_service(&app, post()).await;
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("set-cookie"));
//! // Once only.
//! assert_eq!(test::call_service(&app, post()).await.status(), 410);
//! # });
//! ```
//!
//! # "This wasn't me"
//!
//! A mail about a new sign-in (a [`LoginSucceeded`](crate::events::EventKind::LoginSucceeded)
//! event with `new_device: true`) can carry a link that ends that session:
//! [`OneTimeLinks::issue_end_session`] binds an [`EndSession`](LinkPurpose::EndSession) link
//! to the event's `session_id`, and [`OneTimeLinks::end_session`], from the link's `POST`,
//! uses it and ends that one session (`GET` answers with [`OneTimeLinks::peek`], as for every
//! link). The quickstart mails one for every login from a browser new to the account
//! (`examples/quickstart/new_device.rs`).
//!
//! # Stores
//!
//! Links live in the session store, through three methods of
//! [`SessionStore`](crate::store::SessionStore) (`create_link`, `load_link`, `take_link`).
//! Both stores of the crate keep them; a store of your own that does not answers every link
//! call with `503`, and [`store::contract::check_one_time_links`](crate::store::contract::check_one_time_links)
//! checks one that does. On Redis, issuing costs three round trips (the limits in one script,
//! the credentials version, `SET … NX PX`), looking at a link two (`GET` the link, `GET` the
//! version) and using one two (`GETDEL`, `GET`).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::address::address_bucket;
use super::events::{EventKind, RevokedBy, SecurityEvent};
use super::SessionEngine;
use crate::error::{Error, StoreError};
pub use crate::record::LinkPurpose;
use crate::record::{LinkKey, LinkRecord};
use crate::store::{Admission, Counter};

/// Random bytes per link: 256 bits.
const SECRET_BYTES: usize = 32;
/// Length of a link's secret in the URL: 32 bytes in unpadded base64url.
const SECRET_LEN: usize = 43;
/// The longest a link may live: 7 days. A password change keeps the new credentials version
/// in the store at least as long as the longest lifetime configured, so that every link issued
/// before the change sees it.
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest user name or mail address a link request may name, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// The secret of a one-time link: what the URL carries. Never stored, never logged.
#[derive(Clone)]
struct LinkSecret([u8; SECRET_LEN]);

impl LinkSecret {
    fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        let mut text = [0u8; SECRET_LEN];
        let written = URL_SAFE_NO_PAD.encode_slice(bytes, &mut text);
        debug_assert_eq!(written.ok(), Some(SECRET_LEN));
        Ok(Self(text))
    }

    /// Accepts exactly what [`LinkSecret::generate`] produces, so that garbage never reaches the
    /// store.
    fn parse(raw: &str) -> Option<Self> {
        let text = <[u8; SECRET_LEN]>::try_from(raw.as_bytes()).ok()?;
        let mut bytes = [0u8; SECRET_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(SECRET_BYTES) => Some(Self(text)),
            _ => None,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

/// How many links may be issued within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLimit {
    /// Links allowed within the window; the next request is refused with `429`.
    pub max: u32,
    /// How long a count lasts from its first link.
    pub window: Duration,
}

impl LinkLimit {
    /// `max` links per `window`.
    pub const fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }
}

/// How long one-time links live and how many may be issued: give it to
/// [`LoginMiddlewareBuilder::one_time_links`](crate::LoginMiddlewareBuilder::one_time_links).
///
/// | setting | default |
/// |---|---|
/// | lifetime of a [`PasswordReset`](LinkPurpose::PasswordReset) link | 1 hour |
/// | lifetime of a [`VerifyEmail`](LinkPurpose::VerifyEmail) link | 24 hours |
/// | lifetime of a [`ChangeEmail`](LinkPurpose::ChangeEmail) link | 24 hours |
/// | lifetime of a [`SignIn`](LinkPurpose::SignIn) link | 15 minutes |
/// | lifetime of an [`EndSession`](LinkPurpose::EndSession) link | 24 hours |
/// | links per account, all purposes together | 5 per hour |
/// | links per mail address | 5 per hour |
/// | links per client address (an IPv4 address or an IPv6 /64) | 30 per hour |
///
/// Lifetimes are at most [`MAX_LINK_LIFETIME`] (7 days). The limits count the links clients
/// ask for ([`OneTimeLinks::issue`]), not those the app sends of its own accord
/// ([`OneTimeLinks::issue_end_session`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    lifetimes: [Duration; 5],
    per_account: LinkLimit,
    per_address: LinkLimit,
    per_client: LinkLimit,
}

impl Default for LinkSettings {
    fn default() -> Self {
        const HOUR: Duration = Duration::from_secs(60 * 60);
        Self {
            lifetimes: [
                HOUR,
                24 * HOUR,
                24 * HOUR,
                Duration::from_secs(15 * 60),
                24 * HOUR,
            ],
            per_account: LinkLimit::new(5, HOUR),
            per_address: LinkLimit::new(5, HOUR),
            per_client: LinkLimit::new(30, HOUR),
        }
    }
}

impl LinkSettings {
    /// The defaults in the table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long links for `purpose` work after they are issued, between one second and
    /// [`MAX_LINK_LIFETIME`].
    #[must_use]
    pub fn lifetime(mut self, purpose: LinkPurpose, lifetime: Duration) -> Self {
        self.lifetimes[purpose.index()] = lifetime.clamp(Duration::from_secs(1), MAX_LINK_LIFETIME);
        self
    }

    /// The limit per account, counted across purposes.
    #[must_use]
    pub fn per_account(mut self, limit: LinkLimit) -> Self {
        self.per_account = limit;
        self
    }

    /// The limit per mail address the links go to.
    #[must_use]
    pub fn per_address(mut self, limit: LinkLimit) -> Self {
        self.per_address = limit;
        self
    }

    /// The limit per client address that asks for links. Clients behind one NAT share it.
    #[must_use]
    pub fn per_client(mut self, limit: LinkLimit) -> Self {
        self.per_client = limit;
        self
    }

    pub(crate) fn lifetime_of(&self, purpose: LinkPurpose) -> Duration {
        self.lifetimes[purpose.index()]
    }

    /// The longest lifetime of any purpose.
    pub(crate) fn longest_lifetime(&self) -> Duration {
        LinkPurpose::ALL
            .iter()
            .map(|p| self.lifetime_of(*p))
            .max()
            .unwrap_or(MAX_LINK_LIFETIME)
    }
}

/// The account a link is for, and the mail address it goes to.
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    /// The account's id, as the app logs it in with.
    pub user_id: &'a str,
    /// Where the mail goes: the account's address, or for
    /// [`ChangeEmail`](LinkPurpose::ChangeEmail) the new one.
    pub address: &'a str,
}

impl<'a> Recipient<'a> {
    /// The account `user_id`, mailed at `address`.
    pub fn new(user_id: &'a str, address: &'a str) -> Self {
        Self { user_id, address }
    }
}

/// A link just issued: put [`secret`](Self::secret) into the URL you mail, and nowhere else.
/// `Debug` hides the secret.
pub struct IssuedLink {
    secret: LinkSecret,
    purpose: LinkPurpose,
    expires_at: SystemTime,
}

impl IssuedLink {
    /// The secret for the link's URL: 43 base64url characters, safe in a path segment or a
    /// query parameter as they are.
    pub fn secret(&self) -> &str {
        self.secret.as_str()
    }

    /// What the link is for.
    pub fn purpose(&self) -> LinkPurpose {
        self.purpose
    }

    /// When the link stops working.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl fmt::Debug for IssuedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLink")
            .field("purpose", &self.purpose)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A valid link, as [`OneTimeLinks::peek`] found it or [`OneTimeLinks::consume`] used it.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    record: LinkRecord,
}

impl LinkInfo {
    /// What the link is for.
    pub fn purpose(&self) -> LinkPurpose {
        self.record.purpose()
    }

    /// The account the link acts on.
    pub fn user_id(&self) -> &str {
        self.record.user_id()
    }

    /// The mail address the link was sent to. For [`VerifyEmail`](LinkPurpose::VerifyEmail),
    /// mark this address verified only if it still is the account's address; for
    /// [`ChangeEmail`](LinkPurpose::ChangeEmail), this is the new address.
    pub fn address(&self) -> &str {
        self.record.address()
    }

    /// When the link would have stopped working.
    pub fn expires_at(&self) -> SystemTime {
        self.record.expires_at()
    }

    /// The public id of the session an [`EndSession`](LinkPurpose::EndSession) link ends (as
    /// [`SessionInfo::id`](crate::SessionInfo::id) shows it); `None` for other links.
    pub fn session_id(&self) -> Option<&str> {
        self.record.session_id()
    }
}

/// Issues, shows and uses one-time links: password reset, e-mail verification, e-mail change
/// and sign-in links, each single-use, short-lived and bound to its purpose, its account's
/// credentials and its mail address. See [the module](crate::links) for the flows.
///
/// Take it as an extractor (it then counts issued links per client address too), or get one
/// from [`LoginMiddleware::links`](crate::LoginMiddleware::links) outside requests.
#[derive(Clone)]
pub struct OneTimeLinks {
    engine: SessionEngine,
    client: Option<IpAddr>,
}

impl fmt::Debug for OneTimeLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimeLinks").finish_non_exhaustive()
    }
}

impl OneTimeLinks {
    pub(crate) fn new(engine: SessionEngine, client: Option<IpAddr>) -> Self {
        Self { engine, client }
    }

    /// Issues a link for `purpose` to `to`, or, when `to` is `None` (no account answers to
    /// what the client typed), does the same work and issues nothing.
    ///
    /// `requested_as` is what the client typed (a user name, an address): an unknown one is
    /// counted against the limits just as a known account would be, so neither the answer nor
    /// the time it takes tells whether an account exists. Both cases cost the same store
    /// round trips (the limits, the account's credentials version, the write of a link), so
    /// answer the client the same way whatever this returns, and send the mail off the
    /// request's path.
    ///
    /// The link is bound to the account's current credentials version: a
    /// [password change](crate::Session::credentials_changed) ends every link issued before
    /// it.
    ///
    /// # Errors
    /// [`Error::TooManyLinks`] (429 with `Retry-After`) past a [limit](LinkSettings);
    /// [`Error::InvalidInput`] for a name or address over 1024 bytes, or for
    /// [`EndSession`](LinkPurpose::EndSession), which
    /// [`issue_end_session`](Self::issue_end_session) issues; [`Error::Store`] if the store
    /// fails or keeps no one-time links.
    pub async fn issue(
        &self,
        purpose: LinkPurpose,
        requested_as: &str,
        to: Option<Recipient<'_>>,
    ) -> Result<Option<IssuedLink>, Error> {
        self.engine
            .issue_link(purpose, requested_as, to, self.client)
            .await
    }

    /// Issues an [`EndSession`](LinkPurpose::EndSession) link ("this wasn't me") for the
    /// session of `to`'s account whose public id is `session_id` (a
    /// [`LoginSucceeded`](crate::events::EventKind::LoginSucceeded) event's `session_id`), for
    /// a "New sign-in to your account" mail to `to.address`. Using it
    /// ([`end_session`](Self::end_session)) ends that session and no other.
    ///
    /// The app sends these of its own accord, not at a client's request, so they count toward
    /// none of the [limits](LinkSettings): a notice never takes a password reset's place. Like
    /// every link it works once, lives its [lifetime](LinkSettings::lifetime) (24 hours by
    /// default) and is stored only as a hash. Unlike the others it outlives a password change:
    /// whoever signed in may have changed the password from that very session, which keeps
    /// it, and the owner must still be able to end it (ending a session only takes access
    /// away).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an id or address over 1024 bytes, or an empty session id;
    /// [`Error::Store`] if the store fails or keeps no one-time links.
    pub async fn issue_end_session(
        &self,
        to: Recipient<'_>,
        session_id: &str,
    ) -> Result<IssuedLink, Error> {
        self.engine.issue_end_session_link(to, session_id).await
    }

    /// Uses the [`EndSession`](LinkPurpose::EndSession) link `secret`, and ends the session
    /// it was issued for (a [`SessionRevoked`](crate::events::EventKind::SessionRevoked)
    /// event by [`User`](crate::events::RevokedBy::User)). Returns whether that session was
    /// still live; either way the link is used up. As for every link, call it from a `POST`,
    /// and answer `GET` with [`peek`](Self::peek).
    ///
    /// The session ends before the link is used up, so a store failure in between leaves the
    /// link to try again rather than spent with the session alive. Two uses at once both end
    /// the session and succeed; any use after that finds the link used up.
    ///
    /// # Errors
    /// As [`consume`](Self::consume).
    pub async fn end_session(&self, secret: &str) -> Result<bool, Error> {
        let link = self.peek(LinkPurpose::EndSession, secret).await?;
        let Some(session_id) = link.session_id() else {
            return Err(Error::InvalidLink);
        };
        let ended = self
            .engine
            .revoke(link.user_id(), session_id, RevokedBy::User)
            .await?;
        match self.consume(LinkPurpose::EndSession, secret).await {
            // Used meanwhile by a request that ended the session too.
            Ok(_) | Err(Error::InvalidLink) => Ok(ended),
            Err(err) => Err(err),
        }
    }

    /// The link `secret` for `purpose`, if it is valid, leaving it unused: for the page or
    /// JSON answer a `GET` of the link gets, which offers the action and lets a `POST` take
    /// it. Mail scanners open links; only a `POST` may use one up.
    ///
    /// # Errors
    /// [`Error::InvalidLink`] (410) for a link that is malformed, unknown, used, expired, for
    /// another purpose, or issued before the account's password changed; [`Error::Store`] if
    /// the store fails.
    pub async fn peek(&self, purpose: LinkPurpose, secret: &str) -> Result<LinkInfo, Error> {
        self.engine.check_link(purpose, secret, false).await
    }

    /// Uses the link `secret` for `purpose`: it is gone from the store once this returns, on
    /// every app instance, whatever happens next; of concurrent uses, exactly one gets it.
    ///
    /// # Errors
    /// As [`peek`](Self::peek).
    pub async fn consume(&self, purpose: LinkPurpose, secret: &str) -> Result<LinkInfo, Error> {
        self.engine.check_link(purpose, secret, true).await
    }
}

/// The first 128 bits of the SHA-256 of `text`, in hex: counter names that hold no user name
/// or mail address.
fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SessionEngine {
    pub(crate) async fn issue_link(
        &self,
        purpose: LinkPurpose,
        requested_as: &str,
        to: Option<Recipient<'_>>,
        client: Option<IpAddr>,
    ) -> Result<Option<IssuedLink>, Error> {
        let too_long = |s: &str| s.len() > MAX_NAME_BYTES;
        if too_long(requested_as)
            || to.is_some_and(|to| too_long(to.user_id) || too_long(to.address))
            || purpose == LinkPurpose::EndSession
        {
            return Err(Error::InvalidInput);
        }
        let settings = self.rules.links();
        // Unknown names are counted under what was typed, known accounts under their id and
        // address: the same number of counters, the same work, the same answers.
        let folded = requested_as.trim().to_lowercase();
        let (account, address) = match to {
            Some(to) => (
                format!("lk:a:{}", short_hash(&format!("id\0{}", to.user_id))),
                format!("lk:m:{}", short_hash(&to.address.trim().to_lowercase())),
            ),
            None => (
                format!("lk:a:{}", short_hash(&format!("name\0{folded}"))),
                format!("lk:m:{}", short_hash(&folded)),
            ),
        };
        let client_name = client.map(|ip| format!("lk:c:{}", address_bucket(ip, 64)));
        let mut counters = vec![
            Counter {
                name: &account,
                max: settings.per_account.max,
                window: settings.per_account.window,
            },
            Counter {
                name: &address,
                max: settings.per_address.max,
                window: settings.per_address.window,
            },
        ];
        if let Some(name) = &client_name {
            counters.push(Counter {
                name,
                max: settings.per_client.max,
                window: settings.per_client.window,
            });
        }
        if let Admission::Refused { retry_after } = self.store.admit_anonymous(&counters).await? {
            tracing::warn!(
                purpose = purpose.tag(),
                retry_after_secs = retry_after.as_secs(),
                "one-time link refused: too many issued lately"
            );
            return Err(Error::TooManyLinks {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        self.write_link(purpose, to, None, client).await
    }

    pub(crate) async fn issue_end_session_link(
        &self,
        to: Recipient<'_>,
        session_id: &str,
    ) -> Result<IssuedLink, Error> {
        let too_long = |s: &str| s.len() > MAX_NAME_BYTES;
        if too_long(to.user_id) || too_long(to.address) || too_long(session_id) {
            return Err(Error::InvalidInput);
        }
        if session_id.is_empty() || to.user_id.is_empty() {
            return Err(Error::InvalidInput);
        }
        let purpose = LinkPurpose::EndSession;
        let issued = self
            .write_link(purpose, Some(to), Some(session_id), None)
            .await?;
        // Written for an account, so there is a link.
        issued.ok_or(Error::InvalidInput)
    }

    /// Writes a new link for `purpose` to `to` (or, without one, a link of no one's whose
    /// secret is dropped), bound to the account's credentials version where its purpose is
    /// [bound to the password](LinkPurpose::bound_to_password) and, for
    /// [`EndSession`](LinkPurpose::EndSession), to the session `session_id`.
    async fn write_link(
        &self,
        purpose: LinkPurpose,
        to: Option<Recipient<'_>>,
        session_id: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Option<IssuedLink>, Error> {
        let settings = self.rules.links();
        let secret = LinkSecret::generate().map_err(Error::Random)?;
        let key = LinkKey::of_secret(purpose, secret.as_str());
        let expires_at = SystemTime::now() + settings.lifetime_of(purpose);
        // An unknown account gets a link of no one's, whose secret is dropped here: the same
        // reads and writes as a real one, and nothing anyone can use.
        let (user_id, mail) = to.map_or(("", ""), |to| (to.user_id, to.address));
        let credentials = if purpose.bound_to_password() {
            self.store.credentials_version(user_id).await?
        } else {
            None
        };
        let record = LinkRecord::new(purpose, user_id, mail, credentials, expires_at)
            .for_session(session_id);
        if !self.store.create_link(&key, &record).await? {
            // 192 bits of a fresh random secret collided: the OS generator is broken.
            return Err(Error::Store(StoreError::unavailable(
                "a fresh one-time link's key was taken",
            )));
        }
        let Some(to) = to else {
            return Ok(None);
        };
        tracing::info!(
            user_id = to.user_id,
            purpose = purpose.tag(),
            link = key.short(),
            "one-time link issued"
        );
        let event = EventKind::LinkIssued { purpose };
        self.emit(
            SecurityEvent::new(Some(to.user_id), event)
                .client(client.map(|ip| ip.to_string()).as_deref(), None),
        );
        Ok(Some(IssuedLink {
            secret,
            purpose,
            expires_at,
        }))
    }

    pub(crate) async fn check_link(
        &self,
        purpose: LinkPurpose,
        secret: &str,
        take: bool,
    ) -> Result<LinkInfo, Error> {
        let Some(secret) = LinkSecret::parse(secret) else {
            return Err(Error::InvalidLink);
        };
        let key = LinkKey::of_secret(purpose, secret.as_str());
        let found = if take {
            self.store.take_link(&key).await
        } else {
            self.store.load_link(&key).await
        };
        let record = match found {
            Ok(Some(record)) => record,
            Ok(None) => return Err(Error::InvalidLink),
            Err(StoreError::Corrupt(err)) => {
                tracing::warn!(link = key.short(), error = %err, "unreadable one-time link");
                return Err(Error::InvalidLink);
            }
            Err(err) => return Err(err.into()),
        };
        let live = record.purpose() == purpose
            && !record.user_id().is_empty()
            && record.expires_at() > SystemTime::now();
        if !live || (purpose.bound_to_password() && !self.bound_credentials_hold(&record).await?) {
            tracing::info!(
                link = key.short(),
                purpose = purpose.tag(),
                "one-time link refused: expired, or the credentials changed"
            );
            return Err(Error::InvalidLink);
        }
        if take {
            tracing::info!(
                user_id = record.user_id(),
                purpose = purpose.tag(),
                link = key.short(),
                "one-time link used"
            );
            let event = EventKind::LinkUsed { purpose };
            self.note(SecurityEvent::new(Some(record.user_id()), event))
                .await;
        }
        Ok(LinkInfo { record })
    }

    /// Whether the account's credentials are still the ones the link was issued under.
    ///
    /// A version the store no longer keeps counts as unchanged: every version is kept at least
    /// [`MAX_LINK_LIFETIME`] (and at least as long as any link lives) after it was written, so
    /// a change after the link was issued would still be there to see. A version that
    /// appeared since (the link was issued when the store had none) is a change.
    async fn bound_credentials_hold(&self, record: &LinkRecord) -> Result<bool, Error> {
        let current = self.store.credentials_version(record.user_id()).await?;
        Ok(match (record.credentials(), current.as_deref()) {
            (_, None) => true,
            (Some(bound), Some(current)) => bound == current,
            (None, Some(_)) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_43_chars_of_256_random_bits_and_parse_back() {
        let a = LinkSecret::generate().unwrap();
        let b = LinkSecret::generate().unwrap();
        assert_eq!(a.as_str().len(), SECRET_LEN);
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(LinkSecret::parse(a.as_str()).unwrap().as_str(), a.as_str());
        assert_eq!(format!("{a:?}"), "LinkSecret(..)");
        let good = a.as_str();
        for bad in [
            "",
            &good[..42],
            &format!("{good}A"),
            &format!("{}*", &good[..42]),
            &format!("{}é", &good[..41]),
            "../../../../etc/passwd/../../../../../etc/pas",
        ] {
            assert!(LinkSecret::parse(bad).is_none(), "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// Whatever a client puts where the secret goes, parsing never panics and accepts
        /// only 43 base64url characters that encode 32 bytes exactly, which it gives back as
        /// they came.
        #[test]
        fn any_path_segment_parses_as_a_secret_only_in_the_canonical_form(raw in "\\PC{0,64}|[A-Za-z0-9_-]{43}") {
            if let Some(secret) = LinkSecret::parse(&raw) {
                proptest::prop_assert_eq!(secret.as_str(), raw.as_str());
                let bytes = URL_SAFE_NO_PAD.decode(&raw).unwrap();
                proptest::prop_assert_eq!(bytes.len(), SECRET_BYTES);
                proptest::prop_assert_eq!(URL_SAFE_NO_PAD.encode(bytes), raw);
            } else {
                let canonical = URL_SAFE_NO_PAD
                    .decode(&raw)
                    .is_ok_and(|b| b.len() == SECRET_BYTES && URL_SAFE_NO_PAD.encode(&b) == raw);
                proptest::prop_assert!(!canonical, "refused {}", raw);
            }
        }

        /// Whatever a store gives back, decoding a link record never panics.
        #[test]
        fn any_stored_text_decodes_or_is_refused(raw in "\\PC{0,128}") {
            let _ = serde_json::from_str::<LinkRecord>(&raw);
        }
    }

    #[test]
    fn lifetimes_are_clamped_and_the_longest_is_known() {
        let settings = LinkSettings::new()
            .lifetime(LinkPurpose::SignIn, Duration::ZERO)
            .lifetime(LinkPurpose::VerifyEmail, Duration::from_secs(365 * 86_400));
        assert_eq!(
            settings.lifetime_of(LinkPurpose::SignIn),
            Duration::from_secs(1)
        );
        assert_eq!(settings.longest_lifetime(), MAX_LINK_LIFETIME);
        assert_eq!(
            LinkSettings::new().longest_lifetime(),
            Duration::from_secs(86_400)
        );
    }
}
