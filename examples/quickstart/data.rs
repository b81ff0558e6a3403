//! Session data for anyone, logged in or not: the cart and the preferences.

use actix_login::Session;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::invalid_input;

/// The session-data name of the cart: a JSON array of strings.
const CART: &str = "cart";
/// The longest cart item, in characters.
const MAX_ITEM_CHARS: usize = 100;

#[derive(Deserialize)]
pub(crate) struct CartItem {
    item: String,
}

/// The cart, for anyone. Reading never starts a session: a visitor without one gets an empty
/// cart and no cookie.
pub(crate) async fn cart(session: Session) -> actix_web::Result<HttpResponse> {
    let items: Vec<String> = session.get(CART).await?.unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// Adds an item, for anyone: a visitor's first item starts an anonymous session (the response
/// sets its cookie), which a later login keeps. Read, append, write: of two additions racing
/// in one session, one may be lost, which a cart can afford (the store offers no
/// compare-and-set). The session's data limit bounds the cart (`413 session_data_too_large`).
pub(crate) async fn add_to_cart(
    session: Session,
    body: web::Json<CartItem>,
) -> actix_web::Result<HttpResponse> {
    let item = body.into_inner().item;
    if !(1..=MAX_ITEM_CHARS).contains(&item.chars().count()) {
        return Ok(invalid_input());
    }
    let mut items: Vec<String> = session.get(CART).await?.unwrap_or_default();
    items.push(item);
    session.insert(CART, &items).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// Preferences live in the session's data, one value per name `pref.{key}`.
const PREF_PREFIX: &str = "pref.";
/// The longest preference value, in characters.
const MAX_PREF_CHARS: usize = 1000;

/// Preference keys are 1 to 32 of `a-z`, `0-9` and `_`.
fn valid_pref_key(key: &str) -> bool {
    (1..=32).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[derive(Deserialize)]
pub(crate) struct PrefValue {
    value: String,
}

/// Sets one preference, for anyone (a first write starts an anonymous session, as for the
/// cart). Only this key's value is written: requests setting other keys lose nothing.
pub(crate) async fn set_pref(
    session: Session,
    key: web::Path<String>,
    body: web::Json<PrefValue>,
) -> actix_web::Result<HttpResponse> {
    let value = body.into_inner().value;
    if !valid_pref_key(&key) || value.chars().count() > MAX_PREF_CHARS {
        return Ok(invalid_input());
    }
    session.insert(format!("{PREF_PREFIX}{key}"), value).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every preference, as `{"key":"value",...}`: the `pref.` entries of the session's data.
pub(crate) async fn prefs(session: Session) -> actix_web::Result<HttpResponse> {
    let data = session.entries().await?;
    let prefs: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .filter_map(|(name, json)| {
            let key = name.strip_prefix(PREF_PREFIX)?;
            // Only `set_pref` writes these names, always with a string.
            let value: String = serde_json::from_str(json).ok()?;
            Some((key.to_owned(), value.into()))
        })
        .collect();
    Ok(HttpResponse::Ok().json(prefs))
}
