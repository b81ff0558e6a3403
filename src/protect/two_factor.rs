//! A second factor: TOTP codes from an authenticator app (RFC 6238), recovery codes, and
//! "don't ask again on this browser".
//!
//! The crate keeps what must be shared by every app instance (which codes were used, how many
//! were wrong, which browsers are trusted) in the session store; the app keeps the account's
//! secret and its recovery codes' hashes with the user, as it keeps the password hash. The
//! crate owns no user table.
//!
//! # The login
//!
//! 1. `POST /login` checks the password under the [`LoginThrottle`](crate::throttle::LoginThrottle). For an account with a
//!    second factor, [`TwoFactor::password_verified`] takes the attempt's place: it tells a
//!    trusted browser from others and returns the device cookie. The login names the step,
//!    [`SecondFactor::Due`] (or [`Skipped`](SecondFactor::Skipped) on a trusted browser), with
//!    [`Login::second_factor`](crate::Login::second_factor).
//! 2. A session whose second factor is due is **not a login**: [`AuthUser`](crate::AuthUser),
//!    [`Require`](crate::Require) and the [`Session`](crate::Session) methods that need a login
//!    answer `401 {"error":"second_factor_required"}`, and it ends after 5 minutes
//!    ([`second_factor_timeout`](crate::LoginMiddlewareBuilder::second_factor_timeout)).
//! 3. `POST /login/second-factor` finds the account with
//!    [`Session::pending_second_factor`](crate::Session::pending_second_factor), checks the
//!    code with [`TwoFactor::verify`] (a TOTP code or a recovery code) and calls
//!    [`Session::complete_second_factor`](crate::Session::complete_second_factor): a login on
//!    a new token, with the lifetime, cap and data a password login gets.
//!
//! Each step is a [security event](crate::events): a code accepted, wrong or refused by the
//! limit, a second factor set up, new recovery codes, a browser trusted; the account's
//! activity log shows all but the accepted and the refused codes (a wrong code as a wrong
//! password is shown). A passkey sign-in (the `passkeys` module) counts as both factors.
//!
//! # Safe defaults
//!
//! * **Codes work once, on every instance**: a TOTP code's time step and a recovery code are
//!   claimed in the store ([`SessionStore::claim_once`](crate::store::SessionStore::claim_once):
//!   `SET … NX PX` on Redis) before they count; of two racing uses, one wins. A TOTP claim
//!   lasts just past the code's validity (the step before and after the current one are
//!   accepted, for clocks a little off).
//! * **Guessing is throttled per account, from any address**: 5 wrong codes in 15 minutes
//!   ([`TwoFactor::per_account`]), then `429 {"error":"too_many_codes"}` with `Retry-After`,
//!   even for a right code. A right code does not count.
//! * **Enrolment and new recovery codes need a fresh login**
//!   ([`Require::fresh`](crate::Require::fresh)'s rule, checked here whatever guards the
//!   route), and a secret counts only once a first code from it was verified.
//! * **No second-factor change while impersonating**: enrolment, its confirmation, new
//!   recovery codes and trusting a browser answer `403 {"error":"impersonating"}` from a
//!   session an admin [impersonates](crate::Session::impersonate) the user through, whatever
//!   guards the route.
//! * **Recovery codes**: 10, each 80 random bits (16 characters of base32, shown as
//!   `xxxx-xxxx-xxxx-xxxx`), shown once; the app stores only their SHA-256 hashes, which is
//!   enough for codes of 80 random bits (no dictionary to try, unlike passwords).
//! * **Trusted browsers** skip the second factor for 30 days
//!   ([`TwoFactor::trust_lifetime`]): the store keeps a mark bound to the browser's device
//!   cookie (the one [`LoginThrottle`](crate::throttle::LoginThrottle) issues), the account and its credentials version, so a
//!   password change ends every trust, and a copied mark is worth nothing without the cookie.
//! * **Sudo mode asks for both factors**: on an account with a second factor,
//!   [`Require::fresh`](crate::Require::fresh) passes only if the latest proof in the fresh
//!   window included it; a trusted browser's login or a password-only
//!   [`reauthenticate`](crate::Session::reauthenticate) gets
//!   `403 {"error":"second_factor_reauth_required"}`.
//!
//! # Example
//!
//! ```
//! use actix_login::throttle::LoginThrottle;
//! use actix_login::two_factor::{Enrolled, SecondFactor, TwoFactor};
//! use actix_login::{AuthUser, Login, LoginMiddleware, MemoryStore, Session};
//! use actix_web::{test, web, App, HttpRequest, HttpResponse};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { id: String }
//! # struct Db { secret: String }
//!
//! /// `POST /login`, the password part left out: alice's password was right.
//! async fn login(req: HttpRequest, throttle: web::Data<LoginThrottle>,
//!     two_factor: web::Data<TwoFactor>, session: Session) -> actix_web::Result<HttpResponse> {
//!     let attempt = throttle.attempt(&req, "alice", Some("1")).await?;
//!     // ... the password checks out, and the account has a second factor ...
//!     let verified = two_factor.password_verified(&req, attempt, "1", "v1").await?;
//!     let step = verified.second_factor();
//!     session.login_with(Login::new("1", &Profile { id: "1".into() }).second_factor(step)).await?;
//!     Ok(HttpResponse::Ok()
//!         .cookie(verified.device_cookie())
//!         .json(serde_json::json!({ "second_factor_required": step == SecondFactor::Due })))
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Code { code: String }
//!
//! /// `POST /login/second-factor`.
//! async fn second_factor(req: HttpRequest, two_factor: web::Data<TwoFactor>,
//!     db: web::Data<Db>, session: Session, form: web::Json<Code>)
//!     -> actix_web::Result<HttpResponse> {
//!     let Some(user_id) = session.pending_second_factor().await? else {
//!         return Err(actix_login::Error::Unauthenticated.into());
//!     };
//!     // The account's secret and recovery code hashes, from the user table.
//!     let enrolled = Enrolled::new(&user_id, Some(&db.secret), &[]);
//!     two_factor.verify(&req, &enrolled, &form.code).await?; // 401 invalid_code, 429
//!     session.complete_second_factor().await?;
//!     Ok(HttpResponse::Ok().finish())
//! }
//!
//! async fn me(user: AuthUser<Profile>) -> String {
//!     user.into_inner().id
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let store = MemoryStore::new();
//! let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned();
//! let app = test::init_service(
//!     App::new()
//!         .app_data(web::Data::new(LoginThrottle::new(store.clone())))
//!         .app_data(web::Data::new(TwoFactor::new(store.clone())))
//!         .app_data(web::Data::new(Db { secret: secret.clone() }))
//!         .route("/login", web::post().to(login))
//!         .route("/login/second-factor", web::post().to(second_factor))
//!         .route("/me", web::get().to(me))
//!         .wrap(LoginMiddleware::new(store)),
//! )
//! .await;
//! let post = |uri: &str| test::TestRequest::post().uri(uri).insert_header(("sec-fetch-site", "same-origin"));
//! let res = test::call_service(&app, post("/login").to_request()).await;
//! let half = res.response().cookies().find(|c| c.name() == "__Host-id").unwrap().into_owned();
//! assert_eq!(test::read_body(res).await, r#"{"second_factor_required":true}"#);
//!
//! // The password alone is no login.
//! let me = |cookie| test::TestRequest::get().uri("/me").cookie(cookie).to_request();
//! let res = test::call_service(&app, me(half.clone())).await;
//! assert_eq!(res.status(), 401);
//! assert_eq!(test::read_body(res).await, r#"{"error":"second_factor_required"}"#);
//!
//! // The code from the authenticator app logs in, on a new cookie.
//! # let code = totp_rs::Builder::new().with_secret(totp_rs::Secret::try_from_base32(&secret).unwrap()).build().unwrap().generate_current().to_string();
//! let body = serde_json::json!({ "code": code });
//! let res = test::call_service(&app, post("/login/second-factor").cookie(half.clone()).set_json(&body).to_request()).await;
//! assert_eq!(res.status(), 200);
//! let full = res.response().cookies().find(|c| c.name() == "__Host-id").unwrap().into_owned();
//! assert_eq!(test::call_service(&app, me(full)).await.status(), 200);
//! # });
//! ```
//!
//! # Store commands
//!
//! On Redis, with a [`RedisStore`](crate::RedisStore) for both the sessions and the throttle:
//! checking a code costs the throttle counter (one script), the claim (`SET … NX PX`) and,
//! for a right code, the counter's release (one script); a trusted-browser check is one
//! script; moving the trust to the browser's new device cookie at login two more (a `DEL` and a
//! script).

pub use crate::web::SecondFactor;

#[cfg(feature = "two-factor")]
pub use self::totp::*;

#[cfg(feature = "two-factor")]
mod totp {
    use std::fmt;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use actix_web::cookie::Cookie;
    use actix_web::{HttpMessage as _, HttpRequest};
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

    use crate::engine::events::{EventKind, SecurityEvent};
    use crate::engine::SessionEngine;
    use crate::error::Error;
    use crate::protect::counter::short_hash;
    use crate::protect::device;
    use crate::protect::throttle::{Limit, LoginAttempt, MAX_USERNAME_BYTES};
    use crate::store::{Admission, Counter, DynThrottleStore, ThrottleStore};
    use crate::web::{not_impersonating, user_agent_of, RequestSession, SecondFactor};

    /// A TOTP step: 30 seconds, what authenticator apps assume.
    const STEP_SECS: u64 = 30;
    /// Steps accepted on either side of the current one, for clocks a little off.
    const SKEW_STEPS: u64 = 1;
    /// How long a used code's claim outlives its validity, for instances whose clocks differ.
    const CLAIM_SLACK: Duration = Duration::from_secs(30);
    /// Random bytes of a TOTP secret: 160 bits, as RFC 4226 recommends.
    const SECRET_BYTES: usize = 20;
    /// Recovery codes in a set.
    pub const RECOVERY_CODES: usize = 10;
    /// Characters of a recovery code, without its dashes: 16 of base32, 80 bits.
    const RECOVERY_CHARS: usize = 16;
    /// How long a used recovery code is remembered by the store. The app deletes its hash at
    /// once; the claim only has to outlast the race between two uses, and this is ample.
    const RECOVERY_CLAIM: Duration = Duration::from_secs(365 * 24 * 60 * 60);
    /// The longest code looked at, in bytes.
    const MAX_CODE_BYTES: usize = 64;
    /// The alphabet of recovery codes: RFC 4648 base32, lowercase.
    const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

    /// TOTP, recovery codes and trusted browsers, sharing their state through the store: put
    /// one in the app data (`web::Data<TwoFactor>`) beside the
    /// [`LoginThrottle`](crate::throttle::LoginThrottle)(crate::throttle::LoginThrottle), on the same store. See
    /// [the module](crate::two_factor) for the flow.
    ///
    /// | setting | default |
    /// |---|---|
    /// | [wrong codes per account](Self::per_account), from any address | 5 per 15 minutes |
    /// | [trusted browser](Self::trust_lifetime) | 30 days |
    /// | [issuer](Self::issuer) in `otpauth://` URLs | none |
    ///
    /// Its methods take the request, whose session ([`LoginMiddleware`](crate::LoginMiddleware)
    /// must run) says whose codes are checked: a code is only ever checked for the account
    /// the session belongs to.
    #[derive(Clone)]
    pub struct TwoFactor {
        store: Arc<dyn DynThrottleStore>,
        settings: Arc<Settings>,
    }

    #[derive(Clone, Debug)]
    struct Settings {
        per_account: Limit,
        trust_lifetime: Duration,
        issuer: Option<String>,
    }

    impl fmt::Debug for TwoFactor {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TwoFactor")
                .field("settings", &self.settings)
                .finish_non_exhaustive()
        }
    }

    /// A TOTP secret just made, for an authenticator app: keep [`secret`](Self::secret)
    /// until the first code confirms it (the session's data is a good place), and show
    /// [`otpauth_url`](Self::otpauth_url) (as a QR code, or text). `Debug` hides the secret.
    pub struct Enrolment {
        secret: String,
        url: String,
    }

    impl Enrolment {
        /// The secret in base32 (32 characters), as authenticator apps take it typed in.
        pub fn secret(&self) -> &str {
            &self.secret
        }

        /// The `otpauth://totp/…` URL that authenticator apps read from a QR code.
        pub fn otpauth_url(&self) -> &str {
            &self.url
        }
    }

    impl fmt::Debug for Enrolment {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Enrolment").finish_non_exhaustive()
        }
    }

    /// A new set of recovery codes: show [`codes`](Self::codes) to the user once, store
    /// [`hashes`](Self::hashes) with the account (replacing any earlier set), and nothing
    /// else. `Debug` hides the codes.
    pub struct RecoveryCodes {
        codes: Vec<String>,
        hashes: Vec<String>,
    }

    impl RecoveryCodes {
        fn generate() -> Result<Self, Error> {
            let mut codes = Vec::with_capacity(RECOVERY_CODES);
            for _ in 0..RECOVERY_CODES {
                let mut bytes = [0u8; RECOVERY_CHARS];
                getrandom::fill(&mut bytes).map_err(Error::Random)?;
                // 32 letters from 256 byte values: every letter equally likely, 5 bits each.
                let letters: Vec<u8> = bytes.iter().map(|b| BASE32[usize::from(b % 32)]).collect();
                let text = String::from_utf8(letters).unwrap_or_default();
                let grouped = format!(
                    "{}-{}-{}-{}",
                    &text[..4],
                    &text[4..8],
                    &text[8..12],
                    &text[12..]
                );
                codes.push(grouped);
            }
            let hashes = codes
                .iter()
                .filter_map(|code| recovery_hash(code))
                .collect();
            Ok(Self { codes, hashes })
        }

        /// The codes, `xxxx-xxxx-xxxx-xxxx`, for the user to write down: shown once, never
        /// stored.
        pub fn codes(&self) -> &[String] {
            &self.codes
        }

        /// What the app stores: the codes' SHA-256 hashes (64 hex characters each), in the
        /// order of [`codes`](Self::codes). Give them back to [`Enrolled::new`].
        pub fn hashes(&self) -> &[String] {
            &self.hashes
        }
    }

    impl fmt::Debug for RecoveryCodes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RecoveryCodes")
                .field("hashes", &self.hashes)
                .finish_non_exhaustive()
        }
    }

    /// What the app keeps of an account's second factor, for [`TwoFactor::verify`].
    #[derive(Clone, Copy, Debug)]
    pub struct Enrolled<'a> {
        user_id: &'a str,
        totp_secret: Option<&'a str>,
        recovery_hashes: &'a [String],
    }

    impl<'a> Enrolled<'a> {
        /// The account `user_id` (as it logs in), its TOTP secret in base32 if it has one, and
        /// the [hashes](RecoveryCodes::hashes) of its unused recovery codes.
        pub fn new(
            user_id: &'a str,
            totp_secret: Option<&'a str>,
            recovery_hashes: &'a [String],
        ) -> Self {
            Self {
                user_id,
                totp_secret,
                recovery_hashes,
            }
        }
    }

    /// Which code [`TwoFactor::verify`] accepted.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum CodeUsed {
        /// A code from the authenticator app.
        Totp,
        /// The recovery code whose hash is at `index` in
        /// [`Enrolled::new`]'s list: delete that hash now. The store remembers the code as used
        /// for a year, which covers any race but is no substitute.
        RecoveryCode {
            /// Where the used code's hash is in the list the app gave.
            index: usize,
        },
    }

    /// A password that [`TwoFactor::password_verified`] accepted: the device cookie, and
    /// whether this browser is trusted to skip the second factor.
    #[derive(Debug)]
    pub struct PasswordVerified {
        device: Cookie<'static>,
        trusted: bool,
    }

    impl PasswordVerified {
        /// The device cookie for the response, as
        /// [`LoginAttempt::succeeded`](crate::throttle::LoginAttempt::succeeded) returns it.
        pub fn device_cookie(&self) -> Cookie<'static> {
            self.device.clone()
        }

        /// [`SecondFactor::Skipped`] on a browser the user trusted (and whose trust survived
        /// every password change since), [`SecondFactor::Due`] otherwise: give it to
        /// [`Login::second_factor`](crate::Login::second_factor).
        pub fn second_factor(&self) -> SecondFactor {
            if self.trusted {
                SecondFactor::Skipped
            } else {
                SecondFactor::Due
            }
        }
    }

    impl TwoFactor {
        /// Second factors with the defaults in the table above, counting and claiming in
        /// `store`, which must be the store of the
        /// [`LoginThrottle`](crate::throttle::LoginThrottle)(crate::throttle::LoginThrottle): the device cookies trusted
        /// browsers are bound to live there.
        pub fn new(store: impl ThrottleStore) -> Self {
            Self {
                store: Arc::new(store),
                settings: Arc::new(Settings {
                    per_account: Limit::new(5, Duration::from_secs(15 * 60)),
                    trust_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
                    issuer: None,
                }),
            }
        }

        /// How many wrong codes one account may get within a window, from any address
        /// (default 5 per 15 minutes); past it, `429 too_many_codes`.
        #[must_use]
        pub fn per_account(self, limit: Limit) -> Self {
            self.with(|s| s.per_account = limit)
        }

        /// How long a browser the user trusted skips the second factor (default 30 days).
        #[must_use]
        pub fn trust_lifetime(self, lifetime: Duration) -> Self {
            self.with(|s| s.trust_lifetime = lifetime.max(Duration::from_secs(1)))
        }

        /// The name authenticator apps show beside the account (your site's name), in
        /// `otpauth://` URLs. A `:` is not allowed in it and is dropped.
        #[must_use]
        pub fn issuer(self, issuer: impl Into<String>) -> Self {
            let issuer: String = issuer.into().replace(':', "");
            self.with(|s| s.issuer = Some(issuer))
        }

        fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
            change(Arc::make_mut(&mut self.settings));
            self
        }

        /// A new TOTP secret for the request's user, who must be logged in with a fresh
        /// session; `account_name` is what authenticator apps show (the user name). Nothing is
        /// stored: keep the secret (in the session's data, say) until
        /// [`confirm`](Self::confirm) sees a first code from it.
        ///
        /// # Errors
        /// [`Error::Unauthenticated`] without a login ([`Error::SecondFactorRequired`] for a
        /// half one); [`Error::Impersonating`] (403) from a session an admin
        /// [impersonates](crate::Session::impersonate) the user through, whatever guards the
        /// route; [`Error::ReauthRequired`] or [`Error::SecondFactorReauthRequired`]
        /// outside the fresh window; [`Error::InvalidInput`] for an account name with a `:`
        /// or over 1024 bytes; [`Error::Store`] if the store fails.
        pub async fn enrol(
            &self,
            req: &HttpRequest,
            account_name: &str,
        ) -> Result<Enrolment, Error> {
            let _user = fresh_user(req).await?;
            if account_name.len() > MAX_USERNAME_BYTES || account_name.contains(':') {
                return Err(Error::InvalidInput);
            }
            let mut bytes = [0u8; SECRET_BYTES];
            getrandom::fill(&mut bytes).map_err(Error::Random)?;
            let totp = totp_rs::Builder::new()
                .with_secret(bytes.to_vec())
                .with_account_name(account_name)
                .with_issuer(self.settings.issuer.clone())
                .build()
                .map_err(|_| Error::InvalidInput)?;
            let url = totp.to_url().map_err(|_| Error::InvalidInput)?;
            let secret = totp.secret().to_base32();
            Ok(Enrolment { secret, url })
        }

        /// Checks the first code from the secret [`enrol`](Self::enrol) made, for the
        /// request's user (a fresh login), and on success returns a first set of recovery
        /// codes. Then store the secret and the codes' hashes with the account, and call
        /// [`Session::complete_second_factor`](crate::Session::complete_second_factor): the
        /// session has proven both factors. Sessions of the account from before have not;
        /// consider [ending them](crate::Session::revoke_other_sessions).
        ///
        /// # Errors
        /// As [`enrol`](Self::enrol), and as [`verify`](Self::verify) for the code.
        pub async fn confirm(
            &self,
            req: &HttpRequest,
            secret: &str,
            code: &str,
        ) -> Result<RecoveryCodes, Error> {
            let (engine, user_id) = fresh_user(req).await?;
            let enrolled = Enrolled::new(&user_id, Some(secret), &[]);
            self.check(&engine, req, &enrolled, code).await?;
            let codes = RecoveryCodes::generate()?;
            note(&engine, req, &user_id, EventKind::SecondFactorEnrolled).await;
            Ok(codes)
        }

        /// A new set of recovery codes for the request's user (a fresh login): store their
        /// hashes in place of the old ones, which stop working then.
        ///
        /// # Errors
        /// As [`enrol`](Self::enrol).
        pub async fn regenerate_recovery_codes(
            &self,
            req: &HttpRequest,
        ) -> Result<RecoveryCodes, Error> {
            let (engine, user_id) = fresh_user(req).await?;
            tracing::info!(user_id, "new recovery codes");
            let codes = RecoveryCodes::generate()?;
            note(&engine, req, &user_id, EventKind::RecoveryCodesRegenerated).await;
            Ok(codes)
        }

        /// Checks `code`, a TOTP code or a recovery code, for `enrolled`, the account of the
        /// request's session (one whose second factor is due, or a login proving it again
        /// for [`Require::fresh`](crate::Require::fresh)). On success the code is used up on
        /// every instance; call
        /// [`Session::complete_second_factor`](crate::Session::complete_second_factor) next,
        /// and for a recovery code delete its hash ([`CodeUsed::RecoveryCode`]).
        ///
        /// # Errors
        /// [`Error::InvalidCode`] (401) for a wrong, malformed or used code;
        /// [`Error::TooManyCodes`] (429 with `Retry-After`) past the
        /// [limit](Self::per_account), before the code is looked at;
        /// [`Error::Unauthenticated`] unless the request's session belongs to
        /// `enrolled`'s account; [`Error::Store`] if the store fails or keeps no claims.
        pub async fn verify(
            &self,
            req: &HttpRequest,
            enrolled: &Enrolled<'_>,
            code: &str,
        ) -> Result<CodeUsed, Error> {
            let state = RequestSession::of(&req.extensions(), req.path())?;
            let session = match state.pending_second_factor().await? {
                Some(pending) => Some(pending),
                None => state.resolve().await?,
            };
            if session.is_none_or(|active| active.record.user_id() != enrolled.user_id) {
                return Err(Error::Unauthenticated);
            }
            let used = self.check(state.engine(), req, enrolled, code).await?;
            let kind = EventKind::SecondFactorSucceeded {
                recovery_code: matches!(used, CodeUsed::RecoveryCode { .. }),
            };
            note(state.engine(), req, enrolled.user_id, kind).await;
            Ok(used)
        }

        /// Checks `code` for `enrolled` under the per-account limit; a wrong code and a
        /// refusal by the limit are events.
        async fn check(
            &self,
            engine: &SessionEngine,
            req: &HttpRequest,
            enrolled: &Enrolled<'_>,
            code: &str,
        ) -> Result<CodeUsed, Error> {
            let counter = format!("2f:{}", short_hash(&format!("id:{}", enrolled.user_id)));
            let limit = self.settings.per_account;
            let charged = Counter {
                name: &counter,
                max: limit.max_failures,
                window: limit.window,
            };
            if let Admission::Refused { retry_after } = self.store.admit(&[charged]).await? {
                tracing::warn!(
                    user_id = enrolled.user_id,
                    retry_after_secs = retry_after.as_secs(),
                    "second-factor code refused: too many wrong codes"
                );
                let kind = EventKind::SecondFactorThrottled {
                    retry_after_secs: retry_after.max(Duration::from_secs(1)).as_secs(),
                };
                note(engine, req, enrolled.user_id, kind).await;
                return Err(Error::TooManyCodes {
                    retry_after: retry_after.max(Duration::from_secs(1)),
                });
            }
            let used = match check_code(engine, enrolled, code).await {
                Ok(used) => used,
                Err(Error::InvalidCode) => {
                    tracing::info!(user_id = enrolled.user_id, "wrong second-factor code");
                    note(engine, req, enrolled.user_id, EventKind::SecondFactorFailed).await;
                    return Err(Error::InvalidCode);
                }
                // The store failed: nothing was learnt about the code, so it counts nowhere.
                Err(err) => {
                    self.store.release(&[&counter]).await?;
                    return Err(err);
                }
            };
            // A right code is no guess: it does not count.
            self.store.release(&[&counter]).await?;
            tracing::info!(
                user_id = enrolled.user_id,
                recovery_code = matches!(used, CodeUsed::RecoveryCode { .. }),
                "second-factor code accepted"
            );
            Ok(used)
        }

        /// The password of the account `user_id` was right, on an account with a second
        /// factor: reports `attempt` as [succeeded](LoginAttempt::succeeded), and tells
        /// whether the browser is one the user trusted under the account's current
        /// `credentials_version` (the value given to
        /// [`Login::credentials_version`](crate::Login::credentials_version)). The device
        /// cookie is renewed as it always is; a trust moves with it, keeping its end.
        ///
        /// # Errors
        /// As [`LoginAttempt::succeeded`]; [`Error::InvalidInput`] for an id over 1024 bytes.
        pub async fn password_verified(
            &self,
            req: &HttpRequest,
            attempt: LoginAttempt,
            user_id: &str,
            credentials_version: impl AsRef<[u8]>,
        ) -> Result<PasswordVerified, Error> {
            if user_id.len() > MAX_USERNAME_BYTES {
                return Err(Error::InvalidInput);
            }
            let version = credentials_version.as_ref();
            let old =
                device::presented_token(req).map(|token| trust_name(user_id, &token, version));
            let mut left = None;
            if let Some(name) = &old {
                // `max` 0: a full counter, so this only reads how long the mark has left.
                let probe = Counter {
                    name,
                    max: 0,
                    window: self.settings.trust_lifetime,
                };
                if let Some(Admission::Refused { retry_after }) =
                    self.store.admit_existing(probe).await?
                {
                    left = Some(retry_after);
                }
            }
            let device = attempt.succeeded().await?;
            let (Some(left), Some(old)) = (left, old) else {
                return Ok(PasswordVerified {
                    device,
                    trusted: false,
                });
            };
            // The old device token is revoked: the trust moves to the new one, ending when it
            // would have.
            self.store.reset(&old).await?;
            let trusted = !device.value().is_empty() && !left.is_zero();
            if trusted {
                self.mark_trusted(user_id, device.value(), version, left)
                    .await?;
            }
            tracing::info!(
                user_id,
                trusted,
                "password verified; second factor checked for trust"
            );
            Ok(PasswordVerified { device, trusted })
        }

        /// "Don't ask again on this browser": after the second factor was verified, trusts
        /// the browser for the [trust lifetime](Self::trust_lifetime), bound to the account,
        /// its current `credentials_version` (a password change ends the trust) and a new
        /// device cookie, which this returns for the response (the one the browser came
        /// with is revoked). Trust is kept in the store, for every instance.
        ///
        /// # Errors
        /// [`Error::Unauthenticated`] unless the request's session is a login of `user_id`;
        /// [`Error::Impersonating`] (403) from a session an admin
        /// [impersonates](crate::Session::impersonate) the user through;
        /// [`Error::InvalidInput`] for an id over 1024 bytes; [`Error::Store`] if the store
        /// fails; [`Error::Random`] if the OS random generator does.
        pub async fn trust_browser(
            &self,
            req: &HttpRequest,
            user_id: &str,
            credentials_version: impl AsRef<[u8]>,
        ) -> Result<Cookie<'static>, Error> {
            if user_id.len() > MAX_USERNAME_BYTES {
                return Err(Error::InvalidInput);
            }
            let state = RequestSession::of(&req.extensions(), req.path())?;
            let Some(active) = state.resolve().await? else {
                return Err(Error::Unauthenticated);
            };
            if active.record.user_id() != user_id {
                return Err(Error::Unauthenticated);
            }
            // Trusting a browser is an account change: an impersonator's browser never is.
            not_impersonating(&active)?;
            if let Some(old) = device::presented(req, user_id) {
                self.store.reset(&old).await?;
            }
            let lifetime = self.settings.trust_lifetime;
            let cookie = device::issue(&*self.store, user_id, lifetime).await?;
            let version = credentials_version.as_ref();
            self.mark_trusted(user_id, cookie.value(), version, lifetime)
                .await?;
            tracing::info!(user_id, "browser trusted to skip the second factor");
            note(state.engine(), req, user_id, EventKind::BrowserTrusted).await;
            Ok(cookie)
        }

        async fn mark_trusted(
            &self,
            user_id: &str,
            token: &str,
            version: &[u8],
            lifetime: Duration,
        ) -> Result<(), Error> {
            let name = trust_name(user_id, token, version);
            let mark = Counter {
                name: &name,
                max: u32::MAX,
                window: lifetime,
            };
            self.store.admit(&[mark]).await?;
            Ok(())
        }
    }

    /// Records `kind` for the account `user_id`, with the request's client: the event for
    /// subscribers, and the activity entry where it has one. Never fails.
    async fn note(engine: &SessionEngine, req: &HttpRequest, user_id: &str, kind: EventKind) {
        let ip = RequestSession::of(&req.extensions(), req.path())
            .ok()
            .and_then(|state| state.client_ip())
            .map(|ip| ip.to_string());
        let event = SecurityEvent::new(Some(user_id), kind)
            .client(ip.as_deref(), user_agent_of(req).as_deref());
        engine.note(event).await;
    }

    /// The request's login and its engine, if the login is fresh and nobody impersonates
    /// the user through it: a second factor's set-up is an account change.
    async fn fresh_user(req: &HttpRequest) -> Result<(SessionEngine, String), Error> {
        let state = RequestSession::of(&req.extensions(), req.path())?;
        let active = state.require().await?;
        not_impersonating(&active)?;
        state
            .engine()
            .rules()
            .check_fresh(&active.record, SystemTime::now())?;
        Ok((state.engine().clone(), active.record.user_id().to_owned()))
    }

    /// The trust mark of a device token on an account under a credentials version. The
    /// version goes in hashed, so that any value works.
    fn trust_name(user_id: &str, token: &str, version: &[u8]) -> String {
        let version =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(version));
        format!(
            "t:{}",
            short_hash(&format!("id:{user_id}|{token}|{version}"))
        )
    }

    /// The stored form of a recovery code: the SHA-256 of its 16 letters, in hex; `None` for
    /// text that is no recovery code.
    fn recovery_hash(code: &str) -> Option<String> {
        let letters: String = code
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let valid = letters.len() == RECOVERY_CHARS && letters.bytes().all(|b| BASE32.contains(&b));
        valid.then(|| {
            Sha256::digest(format!("actix-login recovery code\0{letters}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
    }

    /// Checks `code` and claims it. [`Error::InvalidCode`] for a wrong or used one.
    async fn check_code(
        engine: &SessionEngine,
        enrolled: &Enrolled<'_>,
        code: &str,
    ) -> Result<CodeUsed, Error> {
        let code = code.trim();
        if code.len() > MAX_CODE_BYTES {
            return Err(Error::InvalidCode);
        }
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            let Some(secret) = enrolled.totp_secret else {
                return Err(Error::InvalidCode);
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let Some(step) = totp_step(secret, code, now) else {
                return Err(Error::InvalidCode);
            };
            // Valid until the step after it ends; a little longer, for clocks that differ.
            let valid_until = (step + SKEW_STEPS + 1).saturating_mul(STEP_SECS);
            let ttl = Duration::from_secs(valid_until.saturating_sub(now)) + CLAIM_SLACK;
            let name = format!(
                "tc:{}",
                short_hash(&format!("id:{}|{step}", enrolled.user_id))
            );
            return if engine.claim_once(&name, ttl).await? {
                Ok(CodeUsed::Totp)
            } else {
                tracing::warn!(
                    user_id = enrolled.user_id,
                    "a used TOTP code was tried again"
                );
                Err(Error::InvalidCode)
            };
        }
        let Some(hash) = recovery_hash(code) else {
            return Err(Error::InvalidCode);
        };
        let Some(index) = enrolled.recovery_hashes.iter().position(|h| *h == hash) else {
            return Err(Error::InvalidCode);
        };
        let name = format!(
            "rc:{}",
            short_hash(&format!("id:{}|{hash}", enrolled.user_id))
        );
        if engine.claim_once(&name, RECOVERY_CLAIM).await? {
            Ok(CodeUsed::RecoveryCode { index })
        } else {
            tracing::warn!(
                user_id = enrolled.user_id,
                "a used recovery code was tried again"
            );
            Err(Error::InvalidCode)
        }
    }

    /// The time step whose code `code` is, within the skew around `now`, for the base32
    /// `secret`; `None` for a wrong code or an unreadable secret.
    fn totp_step(secret: &str, code: &str, now: u64) -> Option<u64> {
        let bytes = totp_rs::Secret::try_from_base32(secret).ok()?;
        let totp = totp_rs::Builder::new()
            .with_secret(bytes)
            .with_skew(u16::try_from(SKEW_STEPS).unwrap_or(1))
            .with_step_duration(STEP_SECS)
            .build()
            .ok()?;
        totp.check(code, now)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn recovery_codes_are_ten_of_80_bits_and_hash_back() {
            let set = RecoveryCodes::generate().unwrap();
            assert_eq!(set.codes().len(), RECOVERY_CODES);
            assert_eq!(set.hashes().len(), RECOVERY_CODES);
            for (code, hash) in set.codes().iter().zip(set.hashes()) {
                assert_eq!(code.len(), 19, "{code}");
                assert_eq!(recovery_hash(code).as_deref(), Some(hash.as_str()));
                // Typed in capitals, without dashes, with spaces: the same code.
                let typed = code.replace('-', " ").to_uppercase();
                assert_eq!(recovery_hash(&typed).as_deref(), Some(hash.as_str()));
            }
            let mut unique = set.codes().to_vec();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), RECOVERY_CODES);
            assert!(format!("{set:?}").contains("hashes"));
            assert!(!format!("{set:?}").contains(&set.codes()[0]));
        }

        #[test]
        fn text_that_is_no_recovery_code_has_no_hash() {
            for bad in [
                "",
                "123456",
                "abcd-efgh-ijkl-mno",
                "abcd-efgh-ijkl-mnop1",
                "abcd-efgh-ijkl-mn0p",
                "ábcd-efgh-ijkl-mnop",
            ] {
                assert!(recovery_hash(bad).is_none(), "{bad}");
            }
        }

        #[test]
        fn totp_steps_match_rfc_6238_codes() {
            // RFC 6238 appendix B, SHA-1, secret "12345678901234567890", eight digits; the
            // six-digit codes are their last six.
            let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
            assert_eq!(totp_step(secret, "287082", 59), Some(1));
            assert_eq!(totp_step(secret, "081804", 1_111_111_109), Some(37_037_036));
            // The step before and after are accepted, no further.
            assert_eq!(
                totp_step(secret, "081804", 1_111_111_109 + 30),
                Some(37_037_036)
            );
            assert_eq!(totp_step(secret, "081804", 1_111_111_109 + 60), None);
            assert_eq!(totp_step(secret, "000000", 59), None);
            assert_eq!(totp_step("not base32!", "287082", 59), None);
        }
    }
}
