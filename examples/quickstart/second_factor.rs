//! A second factor: TOTP codes from an authenticator app, recovery codes, and "don't ask again
//! on this browser", on `actix_login::two_factor`.
//!
//! The table of who has a second factor lives here, beside the user table, as an app would keep
//! the secret and the recovery codes' hashes with its users. Which codes were used, how many
//! were wrong and which browsers are trusted live in the session store, so every instance
//! agrees.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use actix_login::throttle::LoginThrottle;
use actix_login::two_factor::{CodeUsed, Enrolled, SecondFactor, TwoFactor};
use actix_login::{password, AuthUser, Error, Login, Session, Sessions};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{self, canonical_username, invalid_credentials, LoginForm};
use crate::users::{Profile, Users};

/// The session-data name of a secret waiting for its first code.
const ENROLLING: &str = "totp_enrolling";

/// An account's second factor: its TOTP secret and its unused recovery codes' hashes.
struct Factor {
    secret: String,
    recovery: Vec<String>,
}

/// Who has a second factor, by user id.
#[derive(Default)]
pub(crate) struct SecondFactors(RwLock<HashMap<u64, Factor>>);

impl SecondFactors {
    fn enrolled(&self, id: u64) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    /// The account's secret and recovery code hashes, if it has a second factor.
    fn get(&self, id: u64) -> Option<(String, Vec<String>)> {
        let table = self.0.read().unwrap_or_else(PoisonError::into_inner);
        table
            .get(&id)
            .map(|f| (f.secret.clone(), f.recovery.clone()))
    }

    fn set(&self, id: u64, secret: String, recovery: Vec<String>) {
        let mut table = self.0.write().unwrap_or_else(PoisonError::into_inner);
        table.insert(id, Factor { secret, recovery });
    }

    fn set_recovery(&self, id: u64, recovery: Vec<String>) {
        let mut table = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(factor) = table.get_mut(&id) {
            factor.recovery = recovery;
        }
    }

    /// Deletes a used recovery code's hash, if it is still there.
    fn remove_recovery(&self, id: u64, hash: &str) {
        let mut table = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(factor) = table.get_mut(&id) {
            factor.recovery.retain(|h| h != hash);
        }
    }
}

/// `POST /login`: for an account with a second factor, the right password answers
/// `{"second_factor_required": true}` and a session that is no login yet, unless the browser
/// is trusted; every other account logs in as [`accounts::login`] does.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn login(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    two_factor: web::Data<TwoFactor>,
    factors: web::Data<SecondFactors>,
    session: Session,
    sessions: Sessions,
    creds: web::Json<LoginForm>,
) -> actix_web::Result<HttpResponse> {
    let username = canonical_username(&creds.username).unwrap_or_default();
    let found = users.find(&username);
    let Some((profile, roles, _)) = found.filter(|(p, _, _)| factors.enrolled(p.id)) else {
        return accounts::login(req, users, throttle, session, sessions, creds).await;
    };
    let version = users.password_version(&username).to_string();
    let id = profile.id.to_string();
    let attempt = throttle.attempt(&req, &creds.username, Some(&id)).await?;
    let verified = match users
        .verify(attempt.lane(), &username, &creds.password)
        .await
    {
        Err(password::PasswordError::Busy) => {
            attempt.not_checked().await?;
            return Err(password::PasswordError::Busy.into());
        }
        verified => verified?,
    };
    if !verified {
        attempt.failed().await?;
        return Ok(invalid_credentials());
    }
    // Forgives the attempt, renews the device cookie, and tells a trusted browser.
    let checked = two_factor
        .password_verified(&req, attempt, &id, &version)
        .await?;
    let step = checked.second_factor();
    let login = Login::new(id, &profile)
        .roles(roles)
        .credentials_version(&version)
        .remember(creds.remember)
        .second_factor(step);
    session.login_with(login).await?;
    let mut res = HttpResponse::Ok();
    res.cookie(checked.device_cookie());
    Ok(match step {
        SecondFactor::Due => res.json(json!({ "second_factor_required": true })),
        _ => res.json(profile),
    })
}

#[derive(Deserialize)]
pub(crate) struct CodeForm {
    code: String,
    /// "Don't ask again on this browser" (30 days, until the password changes).
    #[serde(default)]
    trust_browser: bool,
}

/// Checks a code for the account `id` (an authenticator app's, or a recovery code, whose hash
/// is deleted once used).
async fn verify(
    req: &HttpRequest,
    two_factor: &TwoFactor,
    factors: &SecondFactors,
    id: u64,
    code: &str,
) -> Result<(), Error> {
    let (secret, recovery) = factors.get(id).unzip();
    let recovery = recovery.unwrap_or_default();
    let user_id = id.to_string();
    let enrolled = Enrolled::new(&user_id, secret.as_deref(), &recovery);
    if let CodeUsed::RecoveryCode { index } = two_factor.verify(req, &enrolled, code).await? {
        if let Some(hash) = recovery.get(index) {
            factors.remove_recovery(id, hash);
        }
    }
    Ok(())
}

/// `POST /login/second-factor` `{"code","trust_browser"}`: completes the login the password
/// began, on a new session cookie, and answers the profile.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn complete_login(
    req: HttpRequest,
    users: web::Data<Users>,
    two_factor: web::Data<TwoFactor>,
    factors: web::Data<SecondFactors>,
    session: Session,
    form: web::Json<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    let pending = session.pending_second_factor().await?;
    let Some(id) = pending.as_deref().and_then(|id| id.parse::<u64>().ok()) else {
        return Err(Error::Unauthenticated.into());
    };
    verify(&req, &two_factor, &factors, id, &form.code).await?;
    session.complete_second_factor().await?;
    let Some((username, profile, _)) = users.find_by_id(&id.to_string()) else {
        return Err(Error::Unauthenticated.into());
    };
    let mut res = HttpResponse::Ok();
    if form.trust_browser {
        let version = users.password_version(&username).to_string();
        res.cookie(
            two_factor
                .trust_browser(&req, &id.to_string(), version)
                .await?,
        );
    }
    Ok(res.json(profile))
}

/// `POST /2fa/enroll` (a fresh login): a new secret for an authenticator app, kept in the
/// session until a first code confirms it.
pub(crate) async fn enroll(
    req: HttpRequest,
    user: AuthUser<Profile>,
    two_factor: web::Data<TwoFactor>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let enrolment = two_factor.enrol(&req, &user.username).await?;
    session.insert(ENROLLING, enrolment.secret()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "secret": enrolment.secret(),
        "otpauth_url": enrolment.otpauth_url(),
    })))
}

/// `POST /2fa/confirm` `{"code"}` (a fresh login): a first code turns the second factor on and
/// brings ten recovery codes, shown this once. The account's other sessions end: they never
/// proved the new factor.
pub(crate) async fn confirm(
    req: HttpRequest,
    user: AuthUser<Profile>,
    two_factor: web::Data<TwoFactor>,
    factors: web::Data<SecondFactors>,
    session: Session,
    form: web::Json<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    let Some(secret) = session.get::<String>(ENROLLING).await? else {
        return Ok(HttpResponse::Conflict().json(json!({ "error": "no_enrolment" })));
    };
    let codes = two_factor.confirm(&req, &secret, &form.code).await?;
    factors.set(user.id, secret, codes.hashes().to_vec());
    session.remove(ENROLLING).await?;
    session.complete_second_factor().await?;
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::Ok().json(json!({ "recovery_codes": codes.codes() })))
}

/// `POST /2fa/recovery-codes` (a fresh login, both factors): ten new recovery codes; the old
/// ones stop working.
pub(crate) async fn new_recovery_codes(
    req: HttpRequest,
    user: AuthUser<Profile>,
    two_factor: web::Data<TwoFactor>,
    factors: web::Data<SecondFactors>,
) -> actix_web::Result<HttpResponse> {
    if !factors.enrolled(user.id) {
        return Ok(HttpResponse::Conflict().json(json!({ "error": "no_second_factor" })));
    }
    let codes = two_factor.regenerate_recovery_codes(&req).await?;
    factors.set_recovery(user.id, codes.hashes().to_vec());
    Ok(HttpResponse::Ok().json(json!({ "recovery_codes": codes.codes() })))
}

/// `POST /reauth/second-factor` `{"code"}`: after `POST /reauth` (the password), a code makes
/// the session fresh on an account with a second factor.
pub(crate) async fn reauth(
    req: HttpRequest,
    user: AuthUser<Profile>,
    two_factor: web::Data<TwoFactor>,
    factors: web::Data<SecondFactors>,
    session: Session,
    form: web::Json<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    verify(&req, &two_factor, &factors, user.id, &form.code).await?;
    session.complete_second_factor().await?;
    Ok(HttpResponse::NoContent().finish())
}
