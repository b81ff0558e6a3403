//! Passkeys (WebAuthn): registration for a signed-in user and sign-in with a passkey, on
//! [webauthn-rs](https://docs.rs/webauthn-rs), with each ceremony's challenge kept in the
//! session's server-side data. Feature `passkeys`.
//!
//! The crate does not own the user table. A finished registration hands the app a [`Passkey`]
//! to store with the account (as JSON, say); a sign-in asks the app for the account the
//! credential belongs to and then logs in through the same [`Login`] as a password, with the
//! session rotation, the session cap and everything else a login does. The app stores back
//! what the sign-in [updated](PasskeySignIn::updated) (the signature counter, the backup state).
//!
//! Every ceremony has two steps, two requests from the page's script:
//!
//! | step | method | needs | the page then |
//! |---|---|---|---|
//! | 1 | [`Passkeys::start_registration`] | a login within the [fresh window](crate::LoginMiddlewareBuilder::fresh_window), not an [impersonation](crate::Session::impersonate) (`403 impersonating`) | `navigator.credentials.create({publicKey})` |
//! | 2 | [`Passkeys::finish_registration`] | the same login, still fresh | the app stores the [`Passkey`] |
//! | 1 | [`Passkeys::start_discoverable_authentication`] | nothing (a visitor gets an anonymous session) | `navigator.credentials.get({publicKey, mediation})`, `"conditional"` for autofill |
//! | 1 | [`Passkeys::start_authentication`] | the user's passkeys (a named user) | `navigator.credentials.get({publicKey})` |
//! | 2 | [`Passkeys::identify`] | the response | the app looks up the account |
//! | 3 | [`Passkeys::finish_authentication`] | the account, or `None` | the app stores [`PasskeySignIn::updated`] |
//!
//! A challenge lives in the data of the session that asked for it (a visitor's first one starts
//! an anonymous session, within the [bounds on those](crate::LoginMiddlewareBuilder::anonymous_sessions_per_minute)),
//! for at most [`challenge_timeout`](PasskeysBuilder::challenge_timeout), and one at a time: a
//! new start replaces the one waiting. Finishing takes it out in one atomic store write before
//! anything is checked, so it is used once whatever the outcome: a replayed response, or one
//! sent with another session's cookie, finds no challenge or the wrong one. Each refusal is an
//! [`Error::Passkey`] with its own code (see the [table on `Error`](Error#error-codes)) and
//! leaves the session as it was, logged in or not, apart from the challenge it used up.
//!
//! A passkey sign-in is *fresh*, as a password is ([`Require::fresh`](crate::Require::fresh)):
//! from a session already logged in as the same user it confirms the login ("sudo mode",
//! like [`Session::reauthenticate`]) instead of starting a new one.
//!
//! A passkey is **both factors** (webauthn-rs requires user verification: the device's PIN or
//! biometric besides the key): give [`PasskeyAccount::new`] the account's [`Login`] as for a
//! password, with [`Login::second_factor`](crate::Login::second_factor) where the account has a
//! [second factor](crate::two_factor), and the sign-in completes with both, asking no code;
//! confirming sudo mode with a passkey satisfies [`Require::fresh`](crate::Require::fresh)
//! where the password alone would ask for the code. The login's
//! [event](crate::events::EventKind::LoginSucceeded), its activity entry and the
//! [session list](crate::SessionInfo::method) name the method
//! [`Passkey`](crate::events::LoginMethod::Passkey).
//!
//! ```no_run
//! use actix_login::passkeys::{PasskeyAccount, Passkeys, PasskeyUser, PublicKeyCredential, RegisterPublicKeyCredential};
//! use actix_login::{AuthUser, Login, Session};
//! use actix_web::{web, HttpResponse};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { id: u64, handle: actix_login::passkeys::Uuid }
//! # fn passkeys_of(_: u64) -> Vec<actix_login::passkeys::Passkey> { Vec::new() }
//! # fn account_of(_: actix_login::passkeys::Uuid) -> Option<(Profile, Vec<actix_login::passkeys::Passkey>)> { None }
//! # fn save(_: actix_login::passkeys::Passkey) {}
//!
//! // Registration, from a fresh login: the options for `navigator.credentials.create`...
//! async fn add_start(
//!     passkeys: web::Data<Passkeys>,
//!     user: AuthUser<Profile>,
//!     session: Session,
//! ) -> actix_web::Result<HttpResponse> {
//!     let name = user.id.to_string();
//!     let who = PasskeyUser::new(user.handle, &name, &name);
//!     let options = passkeys.start_registration(&session, &who, &passkeys_of(user.id)).await?;
//!     Ok(HttpResponse::Ok().json(options))
//! }
//!
//! // ... and its answer: a credential for the app to keep with the account.
//! async fn add_finish(
//!     passkeys: web::Data<Passkeys>,
//!     session: Session,
//!     response: web::Json<RegisterPublicKeyCredential>,
//! ) -> actix_web::Result<HttpResponse> {
//!     save(passkeys.finish_registration(&session, &response).await?);
//!     Ok(HttpResponse::NoContent().finish())
//! }
//!
//! // Sign-in without a username (a button, or the browser's autofill):
//! async fn sign_in_start(
//!     passkeys: web::Data<Passkeys>,
//!     session: Session,
//! ) -> actix_web::Result<HttpResponse> {
//!     Ok(HttpResponse::Ok().json(passkeys.start_discoverable_authentication(&session).await?))
//! }
//!
//! async fn sign_in_finish(
//!     passkeys: web::Data<Passkeys>,
//!     session: Session,
//!     response: web::Json<PublicKeyCredential>,
//! ) -> actix_web::Result<HttpResponse> {
//!     let pending = passkeys.identify(&session, response.into_inner()).await?;
//!     let account = pending.user_handle().and_then(account_of).map(|(profile, keys)| {
//!         PasskeyAccount::new(Login::new(profile.id.to_string(), &profile), keys)
//!     });
//!     let signed_in = passkeys.finish_authentication(&session, pending, account).await?;
//!     if let Some(updated) = signed_in.updated {
//!         save(updated); // the new signature counter and backup state
//!     }
//!     Ok(HttpResponse::NoContent().finish())
//! }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, PasskeyAuthentication, PasskeyRegistration,
    WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::error::Error;
pub use crate::error::PasskeyRejection;
use crate::record::{Factors, LoginMethod};
use crate::web::{Login, Session};
/// webauthn-rs's types that the ceremonies take and give, so the app needs no version of its own.
pub use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, Passkey, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
};

/// The session data name a waiting ceremony is kept under.
const CHALLENGE_KEY: &str = "_passkey";

/// How long a challenge waits for its answer by default: webauthn-rs's own timeout for the
/// browser's prompt, five minutes.
const DEFAULT_CHALLENGE_TIMEOUT: Duration = Duration::from_secs(300);

/// The ceremonies of one relying party: a site's passkeys. Build it once at start-up and share
/// it (`web::Data`), like the middleware.
#[derive(Clone)]
pub struct Passkeys {
    webauthn: Arc<Webauthn>,
    challenge_timeout: Duration,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("origins", &self.webauthn.get_allowed_origins())
            .field("challenge_timeout", &self.challenge_timeout)
            .finish()
    }
}

/// What is wrong with a passkey configuration: said at start-up, not at the first sign-in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasskeyConfigError {
    /// The origin is not a URL such as `https://example.com` or `http://localhost:8080`.
    #[error("passkey origin {origin:?} is not a URL like https://example.com: {reason}")]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
        /// Why it could not be read.
        reason: String,
    },
    /// The origin has a path, query or fragment: an origin is a scheme, a host and a port.
    #[error("passkey origin {0:?} must be a scheme, host and port only, without a path")]
    OriginWithPath(String),
    /// Browsers offer WebAuthn over plain HTTP to `localhost` only.
    #[error("passkey origin {0:?} must use https (plain http works for localhost only)")]
    InsecureOrigin(String),
    /// The origin's host is an IP address: WebAuthn needs a domain name (`localhost` in
    /// development).
    #[error(
        "passkey origin {0:?} is an IP address; WebAuthn needs a domain name, such as localhost"
    )]
    IpAddress(String),
    /// The relying party id is not the origin's host or a parent domain of it.
    #[error(
        "passkey relying party id {rp_id:?} is not the host of {origin:?} or a parent domain of it"
    )]
    RpIdNotOfOrigin {
        /// The relying party id as given.
        rp_id: String,
        /// The origin as given.
        origin: String,
    },
    /// webauthn-rs refused the configuration for another reason.
    #[error("webauthn-rs refused the passkey configuration: {0}")]
    Webauthn(String),
}

/// Builds [`Passkeys`]: see [`Passkeys::builder`].
#[derive(Debug)]
#[must_use]
pub struct PasskeysBuilder {
    rp_id: String,
    origin: String,
    rp_name: Option<String>,
    challenge_timeout: Duration,
}

impl PasskeysBuilder {
    /// The site's name as authenticators show it (default: the relying party id).
    pub fn rp_name(mut self, name: impl Into<String>) -> Self {
        self.rp_name = Some(name.into());
        self
    }

    /// How long a started ceremony may wait for its answer (default five minutes, which is also
    /// how long browsers are asked to keep their prompt open). Later answers get
    /// `passkey_no_challenge`.
    pub fn challenge_timeout(mut self, timeout: Duration) -> Self {
        self.challenge_timeout = timeout;
        self
    }

    /// Checks the configuration and builds the ceremonies.
    ///
    /// # Errors
    /// A [`PasskeyConfigError`] naming what is wrong with the origin or the relying party id.
    pub fn build(self) -> Result<Passkeys, PasskeyConfigError> {
        let origin = Url::parse(&self.origin).map_err(|err| PasskeyConfigError::InvalidOrigin {
            origin: self.origin.clone(),
            reason: err.to_string(),
        })?;
        if !matches!(origin.scheme(), "http" | "https") || origin.host_str().is_none() {
            return Err(PasskeyConfigError::InvalidOrigin {
                origin: self.origin,
                reason: "an origin is http:// or https:// and a host".to_owned(),
            });
        }
        if !matches!(origin.path(), "" | "/")
            || origin.query().is_some()
            || origin.fragment().is_some()
        {
            return Err(PasskeyConfigError::OriginWithPath(self.origin));
        }
        // A host that is not a domain is an IP address.
        let Some(host) = origin.domain().map(str::to_owned) else {
            return Err(PasskeyConfigError::IpAddress(self.origin));
        };
        if origin.scheme() == "http" && host != "localhost" && !host.ends_with(".localhost") {
            return Err(PasskeyConfigError::InsecureOrigin(self.origin));
        }
        let rp_id = self.rp_id.trim_end_matches('.').to_ascii_lowercase();
        if rp_id.parse::<std::net::IpAddr>().is_ok() {
            return Err(PasskeyConfigError::IpAddress(self.rp_id));
        }
        if rp_id.is_empty() || !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
            return Err(PasskeyConfigError::RpIdNotOfOrigin {
                rp_id: self.rp_id,
                origin: self.origin,
            });
        }
        let rp_name = self.rp_name.unwrap_or_else(|| rp_id.clone());
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .map(|builder| builder.rp_name(&rp_name).timeout(self.challenge_timeout))
            .and_then(WebauthnBuilder::build)
            .map_err(|err| PasskeyConfigError::Webauthn(err.to_string()))?;
        Ok(Passkeys {
            webauthn: Arc::new(webauthn),
            challenge_timeout: self.challenge_timeout,
        })
    }
}

/// The account a registration is for, as authenticators store it.
#[derive(Debug, Clone, Copy)]
pub struct PasskeyUser<'a> {
    handle: Uuid,
    name: &'a str,
    display_name: &'a str,
}

impl<'a> PasskeyUser<'a> {
    /// `handle` is the account's passkey user handle: a random [`Uuid`] made once per account
    /// and stored with it (never an e-mail address or other personal data: authenticators keep
    /// it, and give it back at a username-less sign-in, where [`PendingSignIn::user_handle`]
    /// finds the account by it). `name` is what the account signs in as, `display_name` what
    /// the browser shows beside it.
    pub fn new(handle: Uuid, name: &'a str, display_name: &'a str) -> Self {
        Self {
            handle,
            name,
            display_name,
        }
    }
}

/// What the app found for a passkey sign-in: the login to carry out and the account's passkeys,
/// for [`Passkeys::finish_authentication`].
#[derive(Debug)]
pub struct PasskeyAccount {
    login: Login,
    passkeys: Vec<Passkey>,
}

impl PasskeyAccount {
    /// The account's `login` (its id, profile, roles, credentials version, remember) and every
    /// passkey it holds now: one removed since the sign-in started no longer signs in.
    pub fn new(login: Login, passkeys: Vec<Passkey>) -> Self {
        Self { login, passkeys }
    }
}

/// A passkey sign-in whose response arrived and whose challenge is used up: the app finds the
/// account it names, then gives it to [`Passkeys::finish_authentication`].
#[derive(Debug)]
pub struct PendingSignIn {
    response: PublicKeyCredential,
    ceremony: SignInCeremony,
    credential_id: CredentialID,
}

impl PendingSignIn {
    /// The user handle the authenticator gave back (the [`PasskeyUser`] handle of the account
    /// it registered for): how a username-less sign-in finds the account. Not yet verified:
    /// only [`Passkeys::finish_authentication`] checks the signature.
    pub fn user_handle(&self) -> Option<Uuid> {
        self.response
            .get_user_unique_id()
            .and_then(|bytes| Uuid::from_slice(bytes).ok())
    }

    /// The user id given to [`Passkeys::start_authentication`], for a sign-in of a named user.
    pub fn named_user(&self) -> Option<&str> {
        match &self.ceremony {
            SignInCeremony::Named { user_id, .. } => Some(user_id),
            SignInCeremony::Discoverable { .. } => None,
        }
    }

    /// The id of the credential the response was made with.
    pub fn credential_id(&self) -> &CredentialID {
        &self.credential_id
    }
}

/// A passkey sign-in that succeeded.
#[derive(Debug)]
#[non_exhaustive]
pub struct PasskeySignIn {
    /// The app's id of the user now signed in.
    pub user_id: String,
    /// The credential used.
    pub credential_id: CredentialID,
    /// The passkey with its new signature counter or backup state, when either changed: store
    /// it in place of the old one, or a later sign-in with the same counter is refused as a
    /// possible clone (`passkey_counter_regressed`).
    pub updated: Option<Passkey>,
    /// Whether the session was already logged in as this user and was confirmed (made fresh,
    /// with a new token) rather than replaced by a new login.
    pub confirmed: bool,
}

/// A ceremony waiting in a session's data.
#[derive(Serialize, Deserialize)]
struct Waiting {
    /// Seconds since the Unix epoch after which the answer is refused.
    until: u64,
    ceremony: Ceremony,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Ceremony {
    Registration {
        user_id: String,
        state: PasskeyRegistration,
    },
    Named {
        user_id: String,
        state: PasskeyAuthentication,
    },
    Discoverable {
        state: DiscoverableAuthentication,
    },
}

#[derive(Debug)]
enum SignInCeremony {
    Named {
        user_id: String,
        state: PasskeyAuthentication,
    },
    Discoverable {
        state: DiscoverableAuthentication,
    },
}

impl Passkeys {
    /// The ceremonies for relying party `rp_id` (the site's domain, such as `example.com`, or
    /// `localhost` in development) answered by pages at `origin` (such as
    /// `https://example.com` or `http://localhost:8080`), with the defaults of
    /// [`builder`](Self::builder).
    ///
    /// The relying party id binds every passkey made: changing it later makes them all useless.
    ///
    /// ```
    /// use actix_login::passkeys::Passkeys;
    ///
    /// assert!(Passkeys::new("localhost", "http://localhost:8080").is_ok());
    /// assert!(Passkeys::new("example.com", "https://login.example.com").is_ok());
    /// // WebAuthn takes no IP addresses, and plain HTTP only for localhost.
    /// assert!(Passkeys::new("127.0.0.1", "http://127.0.0.1:8080").is_err());
    /// assert!(Passkeys::new("example.com", "http://example.com").is_err());
    /// ```
    ///
    /// # Errors
    /// A [`PasskeyConfigError`] naming what is wrong.
    pub fn new(rp_id: &str, origin: &str) -> Result<Self, PasskeyConfigError> {
        Self::builder(rp_id, origin).build()
    }

    /// A builder for [`new`](Self::new)'s ceremonies with other settings.
    pub fn builder(rp_id: impl Into<String>, origin: impl Into<String>) -> PasskeysBuilder {
        PasskeysBuilder {
            rp_id: rp_id.into(),
            origin: origin.into(),
            rp_name: None,
            challenge_timeout: DEFAULT_CHALLENGE_TIMEOUT,
        }
    }

    /// Starts adding a passkey to the logged-in account: the options for the page's
    /// `navigator.credentials.create({publicKey: options.publicKey})` (with its binary fields
    /// decoded from base64url). `existing` are the account's passkeys, which the browser then
    /// does not register twice. The passkey is asked to be discoverable, for username-less
    /// sign-in.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a login; [`Error::Impersonating`] (403) from a
    /// session an admin [impersonates](crate::Session::impersonate) the user through, whatever
    /// guards the route; [`Error::ReauthRequired`] outside the
    /// [fresh window](crate::LoginMiddlewareBuilder::fresh_window), and
    /// [`Error::SecondFactorReauthRequired`] on an account with a second factor that the
    /// session's latest proof left out, as for [`Require::fresh`](crate::Require::fresh);
    /// [`Error::Passkey`] if webauthn-rs refuses;
    /// the errors of [`Session::insert`].
    pub async fn start_registration(
        &self,
        session: &Session,
        user: &PasskeyUser<'_>,
        existing: &[Passkey],
    ) -> Result<CreationChallengeResponse, Error> {
        let user_id = fresh_user(session).await?;
        let exclude = existing.iter().map(|key| key.cred_id().clone()).collect();
        let (mut options, state) = self
            .webauthn
            .start_passkey_registration(user.handle, user.name, user.display_name, Some(exclude))
            .map_err(|err| refused("start registration", &err))?;
        // webauthn-rs discourages a discoverable credential; username-less sign-in needs one.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        }
        self.wait(session, Ceremony::Registration { user_id, state })
            .await?;
        Ok(options)
    }

    /// Finishes adding a passkey: checks the browser's answer against the challenge this
    /// session waits for (using it up) and returns the new [`Passkey`] for the app to store
    /// with the account. Check that no other account holds its
    /// [`cred_id`](Passkey::cred_id) first.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without the login that started it; [`Error::Impersonating`]
    /// (403) from an impersonation session, before the challenge is looked at; [`Error::ReauthRequired`]
    /// (or [`Error::SecondFactorReauthRequired`]) once the login is no longer fresh; [`Error::Passkey`] with
    /// [`NoChallenge`](PasskeyRejection::NoChallenge),
    /// [`ChallengeMismatch`](PasskeyRejection::ChallengeMismatch),
    /// [`WrongOrigin`](PasskeyRejection::WrongOrigin) or
    /// [`Rejected`](PasskeyRejection::Rejected); [`Error::Store`] if the store fails.
    pub async fn finish_registration(
        &self,
        session: &Session,
        response: &RegisterPublicKeyCredential,
    ) -> Result<Passkey, Error> {
        // Before the challenge is taken: an impersonator's attempt leaves it alone.
        session.not_impersonating().await?;
        let Some(Ceremony::Registration { user_id, state }) = self.take(session).await? else {
            return Err(Error::Passkey(PasskeyRejection::NoChallenge));
        };
        if fresh_user(session).await? != user_id {
            return Err(Error::Unauthenticated);
        }
        self.webauthn
            .finish_passkey_registration(response, &state)
            .map_err(|err| refused("registration", &err))
    }

    /// Starts a sign-in without a username: the options for the page's
    /// `navigator.credentials.get({publicKey: options.publicKey})`, or with
    /// `mediation: "conditional"` to offer the passkeys in the username field's autofill
    /// (`autocomplete="username webauthn"`). A visitor without a session gets an anonymous
    /// one to hold the challenge.
    ///
    /// # Errors
    /// The errors of [`Session::insert`] (such as [`Error::TooManySessions`] past the bounds on
    /// new anonymous sessions); [`Error::Passkey`] if webauthn-rs refuses.
    pub async fn start_discoverable_authentication(
        &self,
        session: &Session,
    ) -> Result<RequestChallengeResponse, Error> {
        let (mut options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|err| refused("start sign-in", &err))?;
        // The page chooses: a button asks at once, the autofill waits for the user.
        options.mediation = None;
        self.wait(session, Ceremony::Discoverable { state }).await?;
        Ok(options)
    }

    /// Starts a sign-in of the user the app knows as `user_id`, with one of `passkeys`, the
    /// user's: the options for the page's `navigator.credentials.get`. A user without passkeys
    /// is refused with [`UnknownCredential`](PasskeyRejection::UnknownCredential) before any
    /// challenge is made: an app that does not want to tell who has passkeys offers the
    /// username-less sign-in instead.
    ///
    /// # Errors
    /// As for [`start_discoverable_authentication`](Self::start_discoverable_authentication).
    pub async fn start_authentication(
        &self,
        session: &Session,
        user_id: &str,
        passkeys: &[Passkey],
    ) -> Result<RequestChallengeResponse, Error> {
        if passkeys.is_empty() {
            return Err(Error::Passkey(PasskeyRejection::UnknownCredential));
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(passkeys)
            .map_err(|err| refused("start sign-in", &err))?;
        let user_id = user_id.to_owned();
        self.wait(session, Ceremony::Named { user_id, state })
            .await?;
        Ok(options)
    }

    /// The first step of finishing a sign-in: takes the challenge this session waits for out
    /// of its data (used once, whatever follows) and says which account the response names,
    /// for the app to look up ([`PendingSignIn::user_handle`], [`PendingSignIn::named_user`]).
    ///
    /// # Errors
    /// [`Error::Passkey`] with [`NoChallenge`](PasskeyRejection::NoChallenge) if no sign-in
    /// waits in this session; [`Error::Store`] if the store fails.
    pub async fn identify(
        &self,
        session: &Session,
        response: PublicKeyCredential,
    ) -> Result<PendingSignIn, Error> {
        let ceremony = match self.take(session).await? {
            Some(Ceremony::Named { user_id, state }) => SignInCeremony::Named { user_id, state },
            Some(Ceremony::Discoverable { state }) => SignInCeremony::Discoverable { state },
            Some(Ceremony::Registration { .. }) | None => {
                return Err(Error::Passkey(PasskeyRejection::NoChallenge))
            }
        };
        let credential_id = CredentialID::from(response.get_credential_id().to_vec());
        Ok(PendingSignIn {
            response,
            ceremony,
            credential_id,
        })
    }

    /// Finishes a sign-in: checks the response against the challenge and the `account`'s
    /// passkeys (`None` when the app found no account) and, if it holds, logs in with the
    /// account's [`Login`] as [`Session::login_with`] does, or, from a session already logged
    /// in as that user, confirms it as [`Session::reauthenticate`] does. Either way the
    /// session is fresh. Store [`PasskeySignIn::updated`] when it is there.
    ///
    /// # Errors
    /// [`Error::Passkey`] with [`UnknownCredential`](PasskeyRejection::UnknownCredential)
    /// (no account, a passkey it no longer holds, or another user than the one named at the
    /// start), [`ChallengeMismatch`](PasskeyRejection::ChallengeMismatch),
    /// [`WrongOrigin`](PasskeyRejection::WrongOrigin),
    /// [`CounterRegressed`](PasskeyRejection::CounterRegressed) or
    /// [`Rejected`](PasskeyRejection::Rejected), with the session unchanged; then the errors
    /// of [`Session::login_with`] or [`Session::reauthenticate`].
    pub async fn finish_authentication(
        &self,
        session: &Session,
        pending: PendingSignIn,
        account: Option<PasskeyAccount>,
    ) -> Result<PasskeySignIn, Error> {
        let unknown = Error::Passkey(PasskeyRejection::UnknownCredential);
        let Some(PasskeyAccount { login, passkeys }) = account else {
            return Err(unknown);
        };
        let Some(held) = passkeys
            .iter()
            .find(|key| *key.cred_id() == pending.credential_id)
        else {
            return Err(unknown);
        };
        let result = match pending.ceremony {
            SignInCeremony::Named { user_id, state } => {
                if user_id != login.user_id {
                    return Err(unknown);
                }
                self.webauthn
                    .finish_passkey_authentication(&pending.response, &state)
            }
            SignInCeremony::Discoverable { state } => {
                let keys = [DiscoverableKey::from(held)];
                self.webauthn
                    .finish_discoverable_authentication(&pending.response, state, &keys)
            }
        }
        .map_err(|err| refused("sign-in", &err))?;
        let mut updated = held.clone();
        let updated = (updated.update_credential(&result) == Some(true)).then_some(updated);
        let user_id = login.user_id.clone();
        let same_user = session
            .user_and_freshness()
            .await?
            .is_some_and(|(current, _)| current == user_id);
        if same_user {
            session.reauthenticate_with_passkey().await?;
        } else {
            // A passkey is both factors: an account with a second factor (due, or skipped on
            // a trusted browser) is not asked for a code.
            let mut login = login.method(LoginMethod::Passkey);
            if matches!(login.factors, Factors::Pending | Factors::PasswordOnly) {
                login.factors = Factors::Both;
            }
            session.login_with(login).await?;
        }
        Ok(PasskeySignIn {
            user_id,
            credential_id: pending.credential_id,
            updated,
            confirmed: same_user,
        })
    }

    /// Keeps `ceremony` in the session's data, in place of any other waiting.
    async fn wait(&self, session: &Session, ceremony: Ceremony) -> Result<(), Error> {
        let until = unix_secs(SystemTime::now() + self.challenge_timeout);
        session
            .insert(CHALLENGE_KEY, Waiting { until, ceremony })
            .await
    }

    /// Takes the waiting ceremony out of the session's data: `None` if there is none, it
    /// expired, or it cannot be read (say, written by another version of webauthn-rs).
    async fn take(&self, session: &Session) -> Result<Option<Ceremony>, Error> {
        let waiting = match session.remove_as::<Waiting>(CHALLENGE_KEY).await {
            Ok(waiting) => waiting,
            Err(Error::SessionData { source, .. }) => {
                tracing::warn!(error = %source, "unreadable passkey challenge dropped");
                None
            }
            Err(err) => return Err(err),
        };
        Ok(waiting
            .filter(|waiting| unix_secs(SystemTime::now()) <= waiting.until)
            .map(|waiting| waiting.ceremony))
    }
}

/// The logged-in user's id, if the login is fresh as `Require::fresh` asks and nobody
/// impersonates the user through it: a new passkey is an account change.
async fn fresh_user(session: &Session) -> Result<String, Error> {
    session.not_impersonating().await?;
    match session.user_and_freshness().await? {
        None => Err(Error::Unauthenticated),
        Some((user_id, fresh)) => fresh.map(|()| user_id),
    }
}

/// A refusal by webauthn-rs, as the client sees it; the reason goes to the log.
fn refused(step: &'static str, err: &WebauthnError) -> Error {
    let rejection = match err {
        WebauthnError::MismatchedChallenge => PasskeyRejection::ChallengeMismatch,
        WebauthnError::InvalidRPOrigin => PasskeyRejection::WrongOrigin,
        WebauthnError::CredentialPossibleCompromise => PasskeyRejection::CounterRegressed,
        WebauthnError::CredentialNotFound | WebauthnError::InvalidUserUniqueId => {
            PasskeyRejection::UnknownCredential
        }
        _ => PasskeyRejection::Rejected,
    };
    tracing::info!(step, error = %err, "passkey refused");
    Error::Passkey(rejection)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |age| age.as_secs())
}
