//! actix-session's storage interface on a [`RedisStore`]: [`ActixSessionStore`], and
//! [`ActixSessionFailClosed`], the middleware that turns its failures inside actix-session's
//! `SessionMiddleware` into `503`s.
//!
//! The user-facing description (keys, commands, failure behaviour, an example) is on
//! [`ActixSessionStore`], since this module is private and its docs are not rendered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_session::storage::{
    LoadError, SaveError, SessionKey as ActixSessionKey, SessionStore as ActixSessionStorage,
    UpdateError,
};
use actix_web::cookie::time::Duration as StateTtl;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};

use super::RedisStore;
use crate::error::{Error, StoreError};

/// Random bytes per session key: the same 256 bits as this crate's own tokens.
const KEY_BYTES: usize = 32;
/// A key's length in unpadded base64url.
const KEY_LEN: usize = 43;
/// The longest TTL sent to Redis: 100 years, as for the store's own sessions. Redis refuses an
/// expiry that overflows its clock arithmetic, and actix-session accepts any `Duration`.
const MAX_TTL_MILLIS: i128 = 100 * 365 * 24 * 60 * 60 * 1000;

/// actix-session's session state: string values, each already JSON-encoded by its `Session`.
type State = HashMap<String, String>;

tokio::task_local! {
    /// The store failure of the request that [`ActixSessionFailClosed`] is running, if any.
    /// actix-session's middleware drops every detail of a store error on the way to its
    /// response, so the store leaves the failure here for the wrapper to find.
    static FAILURE: RefCell<Option<StoreError>>;
}

/// Set once the store has said that [`ActixSessionFailClosed`] is missing, so that an outage
/// logs that advice once rather than on every request.
static WARNED_UNWRAPPED: AtomicBool = AtomicBool::new(false);

/// actix-session's [`SessionStore`](actix_session::storage::SessionStore) on a [`RedisStore`],
/// for apps that keep actix-session's `SessionMiddleware` and its `Session` extractor.
///
/// It runs on the [`RedisStore`]'s connection, so an app that stays on actix-session still
/// gets what the store gives this crate's own sessions: every command bounded by the store's
/// [command timeout](super::RedisStoreBuilder::command_timeout), Cluster, Sentinel and TLS,
/// reconnection after Redis restarts, and, with
/// [`wait_for_replicas`](super::RedisStoreBuilder::wait_for_replicas), a purge that reaches the
/// replicas before it answers.
///
/// # Storage
///
/// Each session is one Redis string, `{prefix}:a:{SHA-256 of the session key, base64url}`,
/// holding the session state as a JSON object of strings, with a `PX` TTL of actix-session's
/// state TTL. The session key that actix-session puts in its cookie (32 bytes from the
/// operating system's CSPRNG, base64url) never reaches Redis, so a dump, a replica or
/// `MONITOR` yields nothing that can be put in a cookie. The `a` key space is separate from
/// the store's own sessions (`:s:`), so both can share one prefix during a migration.
///
/// | actix-session call | Redis command |
/// |---|---|
/// | `load` | `GET` (none for a key this store cannot have issued) |
/// | `save` | `SET … NX PX` under a new key |
/// | `update` | `SET … XX PX`; a new key through `save` when the old one is gone |
/// | `update_ttl` | `PEXPIRE` |
/// | `delete` | `DEL` (with `WAIT` when waiting for replicas) |
///
/// A key is only ever written by `save` under a key it drew itself, or by `update` under a
/// key that exists already, so a key a client makes up never becomes a session, and a purged
/// session's key is never written again. An `update` that finds its key gone (expired, or
/// purged by a concurrent request) stores the state under a new key, as actix-session's own
/// Redis store does: the request's changes are kept, the old key stays dead. The state it
/// keeps is whatever that request loaded, so with actix-identity a request that changes the
/// session while another one logs out leaves the user logged in under the new key; that race
/// is actix-session's, and only [`LoginMiddleware`](crate::LoginMiddleware), where a logout
/// deletes a record no write can recreate, closes it.
///
/// # Failing closed with a 503
///
/// `SessionMiddleware` turns every store error into an opaque `500`, whatever the error is
/// (its error conversion keeps the cause for logs but fixes the response). When Redis is down
/// the request still fails, and never continues as a new, empty session, but a `500` says
/// "bug" where the truth is "try again". Wrap the app in [`ActixSessionStore::fail_closed`]
/// *outside* `SessionMiddleware` (registered after it, since Actix runs the last `wrap`
/// first) and those requests are answered like the rest of this crate's store failures:
/// `503 {"error":"service_unavailable"}` with `Cache-Control: no-store`. Without it they stay
/// `500`s, and the store logs once that the wrapper is missing.
///
/// Where a `503` is out of reach, and why:
///
/// * Without [`fail_closed`](Self::fail_closed), or with it *inside* `SessionMiddleware`: the
///   middleware builds its `500` from the error alone, through a type whose cause cannot be
///   read back, and nothing a store returns changes its status.
/// * When a middleware between the two turns the `500` error into a response, the wrapper
///   sees a response, not an error, and lets it through.
/// * A failure in the write after the handler (`save`, `update`, `update_ttl`, or the
///   `delete` of a purge or renewal) replaces the handler's response with the `503`, but the
///   handler has run: its own side effects stand. A write that timed out may still land once
///   Redis catches up.
///
/// ```no_run
/// use actix_login::RedisStore;
/// use actix_login::store::ActixSessionStore;
/// use actix_session::{Session, SessionMiddleware};
/// use actix_web::cookie::Key;
/// use actix_web::{web, App, HttpServer};
///
/// async fn visits(session: Session) -> actix_web::Result<String> {
///     let count = session.get::<u32>("visits")?.unwrap_or(0) + 1;
///     session.insert("visits", count)?;
///     Ok(count.to_string())
/// }
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let store = RedisStore::connect("redis://127.0.0.1:6379")
///         .await
///         .map_err(std::io::Error::other)?;
///     // Read the key from your configuration: a new one every start logs everyone out.
///     let key = Key::generate();
///     HttpServer::new(move || {
///         App::new()
///             .wrap(SessionMiddleware::new(
///                 ActixSessionStore::new(store.clone()),
///                 key.clone(),
///             ))
///             // Outside SessionMiddleware: its store failures become 503s.
///             .wrap(ActixSessionStore::fail_closed())
///             .route("/", web::get().to(visits))
///     })
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await
/// }
/// ```
///
/// Clones share the store's connection.
#[derive(Clone, Debug)]
pub struct ActixSessionStore {
    store: RedisStore,
}

impl ActixSessionStore {
    /// Keeps actix-session's sessions in `store`, under its key prefix, with its timeouts and
    /// connection.
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }

    /// The middleware that turns this store's failures inside `SessionMiddleware` into
    /// `503 Service Unavailable`; register it with `wrap` after `SessionMiddleware`, so that it
    /// runs outside it. See [`ActixSessionFailClosed`].
    pub fn fail_closed() -> ActixSessionFailClosed {
        ActixSessionFailClosed { _private: () }
    }

    /// The Redis key for `key`, or `None` for a key that `save` cannot have drawn: such a key
    /// has no session, so no command is spent on it.
    fn redis_key(&self, key: &ActixSessionKey) -> Option<String> {
        let key = key.as_ref();
        if !issued_shape(key) {
            return None;
        }
        let prefix = &self.store.prefix;
        let mut name = String::with_capacity(prefix.len() + 3 + KEY_LEN);
        name.push_str(prefix);
        name.push_str(":a:");
        URL_SAFE_NO_PAD.encode_string(Sha256::digest(key.as_bytes()), &mut name);
        Some(name)
    }

    /// Stores `body` under a freshly drawn key.
    async fn create(&self, body: &[u8], ttl: &StateTtl) -> Result<ActixSessionKey, SaveError> {
        let key = draw_key().map_err(|err| SaveError::Other(anyhow::Error::new(err)))?;
        let session_key = ActixSessionKey::try_from(key)
            .map_err(|err| SaveError::Other(anyhow::Error::new(err)))?;
        let Some(redis_key) = self.redis_key(&session_key) else {
            return Err(SaveError::Other(anyhow::anyhow!(
                "a drawn session key does not have the shape of one"
            )));
        };
        let mut set = redis::cmd("SET");
        set.arg(&redis_key)
            .arg(body)
            .arg("NX")
            .arg("PX")
            .arg(ttl_millis(ttl));
        let created: Option<String> = self
            .store
            .run(set.query_async(&mut self.store.connection.clone()))
            .await
            .map_err(|err| SaveError::Other(noted(err)))?;
        if created.is_none() {
            // 256 random bits that are already taken: the random source is broken. Writing
            // over the existing session would hand it to this client.
            return Err(SaveError::Other(anyhow::anyhow!(
                "a freshly drawn session key is already in use"
            )));
        }
        Ok(session_key)
    }
}

impl ActixSessionStorage for ActixSessionStore {
    async fn load(&self, session_key: &ActixSessionKey) -> Result<Option<State>, LoadError> {
        let Some(redis_key) = self.redis_key(session_key) else {
            return Ok(None);
        };
        let mut get = redis::cmd("GET");
        get.arg(&redis_key);
        let value: Option<Vec<u8>> = self
            .store
            .run(get.query_async(&mut self.store.connection.clone()))
            .await
            .map_err(|err| LoadError::Other(noted(err)))?;
        let Some(value) = value else {
            return Ok(None);
        };
        // actix-session answers `Deserialization` with an empty session under the same key,
        // which `update` may then overwrite: the key is one `save` drew, so nothing is adopted.
        serde_json::from_slice(&value).map(Some).map_err(|err| {
            tracing::warn!(
                session = short(&redis_key),
                error = %err,
                "unreadable actix-session state; starting the session afresh"
            );
            LoadError::Deserialization(err.into())
        })
    }

    async fn save(&self, state: State, ttl: &StateTtl) -> Result<ActixSessionKey, SaveError> {
        let body =
            serde_json::to_vec(&state).map_err(|err| SaveError::Serialization(err.into()))?;
        self.create(&body, ttl).await
    }

    async fn update(
        &self,
        session_key: ActixSessionKey,
        state: State,
        ttl: &StateTtl,
    ) -> Result<ActixSessionKey, UpdateError> {
        let body =
            serde_json::to_vec(&state).map_err(|err| UpdateError::Serialization(err.into()))?;
        if let Some(redis_key) = self.redis_key(&session_key) {
            // `XX`: only a key that is still there is written, so a purged or expired key is
            // never brought back, and a key nobody saved is never taken up.
            let mut set = redis::cmd("SET");
            set.arg(&redis_key)
                .arg(&body)
                .arg("XX")
                .arg("PX")
                .arg(ttl_millis(ttl));
            let updated: Option<String> = self
                .store
                .run(set.query_async(&mut self.store.connection.clone()))
                .await
                .map_err(|err| UpdateError::Other(noted(err)))?;
            if updated.is_some() {
                return Ok(session_key);
            }
        }
        // Gone since `load`. actix-session expects the state to survive under a new key, which
        // it then sends in the cookie.
        self.create(&body, ttl).await.map_err(|err| match err {
            SaveError::Serialization(err) => UpdateError::Serialization(err),
            SaveError::Other(err) => UpdateError::Other(err),
        })
    }

    async fn update_ttl(
        &self,
        session_key: &ActixSessionKey,
        ttl: &StateTtl,
    ) -> Result<(), anyhow::Error> {
        let Some(redis_key) = self.redis_key(session_key) else {
            return Ok(());
        };
        let mut pexpire = redis::cmd("PEXPIRE");
        pexpire.arg(&redis_key).arg(ttl_millis(ttl));
        // 0 for a key that is gone: nothing to extend, and `PEXPIRE` creates nothing.
        let _extended: i64 = self
            .store
            .run(pexpire.query_async(&mut self.store.connection.clone()))
            .await
            .map_err(noted)?;
        Ok(())
    }

    async fn delete(&self, session_key: &ActixSessionKey) -> Result<(), anyhow::Error> {
        let Some(redis_key) = self.redis_key(session_key) else {
            return Ok(());
        };
        let mut conn = self.store.connection.clone();
        let mut del = redis::cmd("DEL");
        del.arg(&redis_key);
        // A purge is a logout: when the store must not lose one in a failover, neither may
        // this. No local cache ever holds these keys, so there is nothing to settle.
        let _removed: i64 = match self.store.replica_wait {
            None => self.store.run(del.query_async(&mut conn)).await,
            Some(wait) => self.store.write_on_replicas(&mut conn, del, wait).await,
        }
        .map_err(noted)?;
        Ok(())
    }
}

/// The middleware that answers `503 Service Unavailable` when an [`ActixSessionStore`] fails
/// inside actix-session's `SessionMiddleware`, which would answer `500`.
///
/// Made by [`ActixSessionStore::fail_closed`]. It must run outside `SessionMiddleware`:
/// register it with `wrap` after it. A request during which the store failed is answered
/// `503 {"error":"service_unavailable"}` with `Cache-Control: no-store`, as this crate answers
/// its own store failures; the failure is logged. Every other request and error passes through
/// untouched.
#[derive(Clone, Copy, Debug)]
pub struct ActixSessionFailClosed {
    _private: (),
}

impl<S, B> Transform<S, ServiceRequest> for ActixSessionFailClosed
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ActixSessionFailClosedService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ActixSessionFailClosedService {
            service: Rc::new(service),
        }))
    }
}

/// The service [`ActixSessionFailClosed`] wraps around the app; not used directly.
#[doc(hidden)]
pub struct ActixSessionFailClosedService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for ActixSessionFailClosedService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        // The inner call starts inside the scope too, in case a middleware between here and
        // actix-session reaches the store before returning its future.
        Box::pin(FAILURE.scope(RefCell::new(None), async move {
            let result = service.call(req).await;
            let failure = FAILURE.with(|slot| slot.borrow_mut().take());
            match (result, failure) {
                (Err(_opaque_500), Some(cause)) => {
                    tracing::error!(error = %cause, "session store failed; refusing the request");
                    Err(Error::Store(cause).into())
                }
                (result, _) => result,
            }
        }))
    }
}

/// Leaves a copy of `err` for [`ActixSessionFailClosed`] and returns it as actix-session wants
/// it.
fn noted(err: StoreError) -> anyhow::Error {
    let copy = match &err {
        StoreError::Timeout => StoreError::Timeout,
        StoreError::Unavailable(source) => StoreError::unavailable(source.to_string()),
        StoreError::Corrupt(source) => StoreError::corrupt(source.to_string()),
    };
    let wrapped = FAILURE.try_with(|slot| *slot.borrow_mut() = Some(copy));
    if wrapped.is_err() && !WARNED_UNWRAPPED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "the actix-session store failed and SessionMiddleware answers 500; wrap the app in \
             ActixSessionStore::fail_closed() outside SessionMiddleware to answer 503"
        );
    }
    anyhow::Error::new(err)
}

/// A new session key: 32 bytes from the operating system's CSPRNG, in unpadded base64url.
fn draw_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `key` is exactly what [`draw_key`] produces: 43 base64url characters that decode,
/// canonically, to 32 bytes.
fn issued_shape(key: &str) -> bool {
    let mut bytes = [0u8; KEY_BYTES];
    key.len() == KEY_LEN && matches!(URL_SAFE_NO_PAD.decode_slice(key, &mut bytes), Ok(KEY_BYTES))
}

/// actix-session's TTL in milliseconds as Redis takes it: at least 1 (Redis refuses 0 and
/// negative values, and a session with no time left should go at once), at most 100 years.
fn ttl_millis(ttl: &StateTtl) -> i64 {
    let millis = ttl.whole_milliseconds().clamp(1, MAX_TTL_MILLIS);
    i64::try_from(millis).unwrap_or(i64::MAX)
}

/// The first eight characters of a Redis key's hash, for log lines: enough to correlate them,
/// too little to find the session.
fn short(redis_key: &str) -> &str {
    let hash = redis_key.rsplit(':').next().unwrap_or_default();
    hash.get(..8).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_keys_have_the_issued_shape() {
        for _ in 0..100 {
            let key = draw_key().unwrap();
            assert_eq!(key.len(), KEY_LEN);
            assert!(issued_shape(&key), "{key}");
        }
    }

    #[test]
    fn anything_else_is_not_a_key_this_store_issued() {
        let good = draw_key().unwrap();
        let mut noncanonical = good[..42].to_owned();
        noncanonical.push('B');
        let rejected = [
            String::new(),
            "a".repeat(64),
            good[..42].to_owned(),
            format!("{good}A"),
            format!("{}=", &good[..42]),
            format!("{}+", &good[..42]),
            noncanonical,
            // actix-session's own keys: 64 alphanumerics.
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZab".to_owned(),
        ];
        for key in rejected {
            assert!(!issued_shape(&key), "{key:?}");
        }
    }

    #[test]
    fn ttls_are_kept_within_what_redis_takes() {
        assert_eq!(ttl_millis(&StateTtl::ZERO), 1);
        assert_eq!(ttl_millis(&StateTtl::seconds(-5)), 1);
        assert_eq!(ttl_millis(&StateTtl::seconds(2)), 2000);
        assert_eq!(ttl_millis(&StateTtl::MAX), 3_153_600_000_000);
    }

    #[test]
    fn log_lines_get_eight_characters_of_the_hash() {
        assert_eq!(short("app:a:abcdefghijklmnop"), "abcdefgh");
        assert_eq!(short("abc"), "abc");
    }
}
