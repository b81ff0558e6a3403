//! The passkey side of a test app, shared by `passkeys.rs` and the guarantee matrix
//! (`deployment.rs`): the app's user table, its passkey routes, and webauthn-rs's software
//! authenticator making real attestations and assertions for them.
//!
//! A user's profile is their id (`u64`); their passkey handle lives in [`Users`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use actix_login::passkeys::{
    CreationChallengeResponse, Passkey, PasskeyAccount, PasskeyUser, Passkeys, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
};
use actix_login::two_factor::SecondFactor;
use actix_login::{AuthUser, Error, Login, Session};
use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::{test, web, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use super::http::{set_cookie, status_and_body, with_cookie};

/// The origin the apps' [`Passkeys`] accept, for relying party `localhost`.
pub const ORIGIN: &str = "http://localhost:8080";

/// The [`Passkeys`] of every test app: relying party `localhost`, [`ORIGIN`].
pub fn passkeys() -> Passkeys {
    Passkeys::new("localhost", ORIGIN).unwrap()
}

/// The app's user table: each user's passkey handle and passkeys, and who has a TOTP second
/// factor. Instances of one app share it, as they would share a database.
#[derive(Default)]
pub struct Users(
    Mutex<HashMap<u64, (Uuid, Vec<Passkey>)>>,
    Mutex<HashSet<u64>>,
);

impl Users {
    pub fn add_totp(&self, id: u64) {
        self.1.lock().unwrap().insert(id);
    }

    /// Where the account's second factor stands for a login that did not skip it.
    pub fn second_factor(&self, id: u64) -> SecondFactor {
        if self.1.lock().unwrap().contains(&id) {
            SecondFactor::Due
        } else {
            SecondFactor::None
        }
    }

    pub fn handle(&self, id: u64) -> Uuid {
        let mut users = self.0.lock().unwrap();
        users
            .entry(id)
            .or_insert_with(|| (Uuid::new_v4(), Vec::new()))
            .0
    }

    pub fn passkeys(&self, id: u64) -> Vec<Passkey> {
        self.0
            .lock()
            .unwrap()
            .get(&id)
            .map(|(_, keys)| keys.clone())
            .unwrap_or_default()
    }

    fn by_handle(&self, handle: Uuid) -> Option<(u64, Vec<Passkey>)> {
        let users = self.0.lock().unwrap();
        users
            .iter()
            .find(|(_, (h, _))| *h == handle)
            .map(|(id, (_, keys))| (*id, keys.clone()))
    }

    /// Stores `key` in place of the passkey with its id, or adds it.
    fn save(&self, id: u64, key: Passkey) {
        let mut users = self.0.lock().unwrap();
        let keys = &mut users.get_mut(&id).unwrap().1;
        keys.retain(|k| k.cred_id() != key.cred_id());
        keys.push(key);
    }

    pub fn remove_all(&self, id: u64) {
        self.0.lock().unwrap().get_mut(&id).unwrap().1.clear();
    }

    /// Raises the stored signature counter of every passkey of `id`: what the table holds after
    /// a clone of the authenticator signed in, ahead of the original.
    pub fn raise_counters(&self, id: u64, to: u32) {
        let mut users = self.0.lock().unwrap();
        for key in &mut users.get_mut(&id).unwrap().1 {
            let mut json = serde_json::to_value(&*key).unwrap();
            json["cred"]["counter"] = json!(to);
            *key = serde_json::from_value(json).unwrap();
        }
    }
}

/// The passkey routes, for an app with `web::Data<Passkeys>` and `web::Data<Users>`:
/// `POST /passkeys/register/{start,finish}` for the logged-in user,
/// `POST /passkeys/sign-in/start` (username-less), `/passkeys/sign-in/start/{id}` and
/// `/passkeys/sign-in/finish`, which answers `{"user_id", "confirmed"}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/passkeys/register/start", web::post().to(register_start))
        .route("/passkeys/register/finish", web::post().to(register_finish))
        .route("/passkeys/sign-in/start", web::post().to(sign_in_start))
        .route(
            "/passkeys/sign-in/start/{id}",
            web::post().to(sign_in_start_named),
        )
        .route("/passkeys/sign-in/finish", web::post().to(sign_in_finish));
}

async fn register_start(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    user: AuthUser<u64>,
    session: Session,
) -> Result<HttpResponse, Error> {
    let name = format!("user{}", *user);
    let who = PasskeyUser::new(users.handle(*user), &name, &name);
    let options = passkeys
        .start_registration(&session, &who, &users.passkeys(*user))
        .await?;
    Ok(HttpResponse::Ok().json(options))
}

async fn register_finish(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    user: AuthUser<u64>,
    session: Session,
    response: web::Json<RegisterPublicKeyCredential>,
) -> Result<HttpResponse, Error> {
    let key = passkeys.finish_registration(&session, &response).await?;
    users.save(*user, key);
    Ok(HttpResponse::NoContent().finish())
}

async fn sign_in_start(
    passkeys: web::Data<Passkeys>,
    session: Session,
) -> Result<HttpResponse, Error> {
    let options = passkeys.start_discoverable_authentication(&session).await?;
    Ok(HttpResponse::Ok().json(options))
}

async fn sign_in_start_named(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    session: Session,
    id: web::Path<u64>,
) -> Result<HttpResponse, Error> {
    let options = passkeys
        .start_authentication(&session, &id.to_string(), &users.passkeys(*id))
        .await?;
    Ok(HttpResponse::Ok().json(options))
}

async fn sign_in_finish(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    session: Session,
    response: web::Json<PublicKeyCredential>,
) -> Result<HttpResponse, Error> {
    let pending = passkeys.identify(&session, response.into_inner()).await?;
    let found = match pending.named_user() {
        Some(named) => named.parse::<u64>().ok().map(|id| (id, users.passkeys(id))),
        None => pending.user_handle().and_then(|h| users.by_handle(h)),
    };
    let account = found.map(|(id, keys)| {
        // The account's login as for a password, its second factor due if it has one.
        let login = Login::new(id.to_string(), &id)
            .roles(["user"])
            .second_factor(users.second_factor(id));
        (id, PasskeyAccount::new(login, keys))
    });
    let id = account.as_ref().map(|(id, _)| *id);
    let signed_in = passkeys
        .finish_authentication(&session, pending, account.map(|(_, a)| a))
        .await?;
    if let (Some(id), Some(updated)) = (id, signed_in.updated) {
        users.save(id, updated);
    }
    Ok(HttpResponse::Ok().json(json!({
        "user_id": signed_in.user_id,
        "confirmed": signed_in.confirmed,
    })))
}

/// A POST from the app's own page, with `cookie`'s session and a JSON `body`.
pub fn request(path: &str, cookie: Option<&str>, body: Option<Value>) -> actix_http::Request {
    let mut req = test::TestRequest::post()
        .uri(path)
        .insert_header(("sec-fetch-site", "same-origin"));
    if let Some(body) = body {
        req = req.set_json(body);
    }
    with_cookie(req, cookie)
}

/// One answer: status, body, and the session cookie it set (or cleared), if any.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub cookie: Option<String>,
}

impl Answer {
    pub async fn of<B: MessageBody>(res: ServiceResponse<B>) -> Self {
        let cookie = set_cookie(&res).map(|c| c.value().to_owned());
        let (status, body) = status_and_body(res).await;
        Answer {
            status,
            body,
            cookie,
        }
    }

    /// The error code of a JSON error body, or the body.
    pub fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.body.clone())
    }
}

/// A software passkey that claims user verification, as a platform authenticator with a PIN
/// or fingerprint does.
pub fn authenticator() -> WebauthnAuthenticator<SoftPasskey> {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

/// The attestation `auth` makes for a registration's `options` (a JSON body).
pub fn register_with(
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    origin: &str,
    options: &str,
) -> Value {
    let options: CreationChallengeResponse = serde_json::from_str(options).unwrap();
    let response = auth
        .do_registration(Url::parse(origin).unwrap(), options)
        .unwrap();
    serde_json::to_value(response).unwrap()
}

/// The assertion `auth` makes for `options`. For a username-less sign-in the software
/// authenticator, which keeps no credentials of its own to choose from, is told `credential`,
/// and the user handle a discoverable credential returns is added to the response (it is not
/// signed, in WebAuthn either).
pub fn sign_with(
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    origin: &str,
    options: &str,
    discoverable: Option<(&Passkey, Uuid)>,
) -> Value {
    let mut options: Value = serde_json::from_str(options).unwrap();
    if let Some((key, _)) = discoverable {
        let id = serde_json::to_value(key.cred_id()).unwrap();
        options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": id}]);
    }
    let options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    let response = auth
        .do_authentication(Url::parse(origin).unwrap(), options)
        .unwrap();
    let mut response = serde_json::to_value(response).unwrap();
    if let Some((_, handle)) = discoverable {
        response["response"]["userHandle"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(handle.as_bytes()));
    }
    response
}
