//! Device tokens: the throttle's memory of browsers that have logged in before.
//!
//! A token is 32 random bytes in a cookie. The store holds no token, only a counter named after
//! a hash of the token and the account's id (the app's stable key for the account, not the
//! name typed at login), so a token is valid exactly while that counter lives, for that account
//! alone, and the counter's count is how many attempts the token has made. A renamed account
//! keeps its devices; a new account that takes an old name gets none of them.

use std::time::Duration;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::HttpRequest;
use base64::Engine as _;

use super::counter::short_hash;
use crate::error::Error;
use crate::store::{Counter, DynThrottleStore};

/// The device cookie's name. `__Host-` makes browsers refuse it unless it is `Secure`, has
/// `Path=/` and no `Domain`, so a sibling subdomain cannot plant one.
pub(crate) const DEVICE_COOKIE: &str = "__Host-device";

const TOKEN_BYTES: usize = 32;

/// The length of a token in base64url without padding.
const TOKEN_CHARS: usize = 43;

/// The counter that stands for the request's device token on the account with id `account`,
/// if the request carries something shaped like one. Whether it is valid is for the store to
/// say.
pub(crate) fn presented(req: &HttpRequest, account: &str) -> Option<String> {
    let cookie = req.cookie(DEVICE_COOKIE)?;
    let token = cookie.value();
    let well_formed = token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| counter_name(account, token))
}

/// The request's device token, if it carries something shaped like one.
#[cfg(feature = "two-factor")]
pub(crate) fn presented_token(req: &HttpRequest) -> Option<String> {
    let cookie = req.cookie(DEVICE_COOKIE)?;
    let token = cookie.value();
    let well_formed = token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| token.to_owned())
}

/// Makes a new token for the account with id `account`, valid for `lifetime`, and the cookie
/// that carries it.
pub(crate) async fn issue(
    store: &dyn DynThrottleStore,
    account: &str,
    lifetime: Duration,
) -> Result<Cookie<'static>, Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let name = counter_name(account, &token);
    // Created holding one, its first attempt: the limit checked later is failures plus one.
    // No limit can refuse it, since a fresh random name has never been counted.
    let created = Counter {
        name: &name,
        max: u32::MAX,
        window: lifetime,
    };
    store.admit(&[created]).await?;
    let max_age = time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX);
    Ok(Cookie::build(DEVICE_COOKIE, token)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(max_age)
        .finish())
}

/// The counter of `token` on the account with id `account`. The prefix keeps ids apart from
/// the username hashes that named device counters before ids did: such an old token is no
/// token now, and its browser logs in once as a stranger to get a new one.
fn counter_name(account: &str, token: &str) -> String {
    format!("d:{}", short_hash(&format!("id:{account}|{token}")))
}

/// A cookie that removes the device cookie.
pub(crate) fn removal() -> Cookie<'static> {
    let mut cookie = Cookie::build(DEVICE_COOKIE, "")
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    cookie.make_removal();
    cookie
}
