//! The session engine: what a login session is and every rule it follows, with no web types.
//!
//! The engine turns a client's [`SessionToken`] into a live [`ActiveSession`] (or nothing), and
//! carries out login, logout, rotation, listing, revocation and the per-user cap against any
//! [`SessionStore`](crate::store::SessionStore). It knows nothing about HTTP: the web layer
//! (`src/web`) reads the token from a cookie, asks the engine, and writes the answer back
//! as a `Set-Cookie`.
//!
//! | file | holds |
//! |---|---|
//! | `token.rs` | the secret token a client holds, from which the [`SessionKey`] stores see is derived |
//! | `rules.rs` | idle and absolute expiry, freshness, the refresh threshold |
//! | `lifecycle.rs` | resolve, login, logout, rotation |
//! | `sessions.rs` | listing, revocation, the per-user cap, and the public [`Sessions`] handle |
//! | `tokens.rs` | personal access tokens: bearer sessions a logged-in user creates |
//! | `data.rs` | session data, anonymous sessions, live updates of a user's profile and roles |
//! | `address.rs` | client addresses as counters see them |
//! | `credentials.rs` | a password change that no login verified against the old one outlives |
//! | `links.rs` | one-time links: issuing them under limits, looking at them, using them once |
//! | `events.rs` | security events to subscribers, and each user's activity log |
//! | `impersonation.rs` | an admin acting as another user, audited, and back |

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::value::RawValue;

use crate::record::{Factors, SessionKey, SessionRecord};
use crate::store::DynStore;

mod address;
mod credentials;
mod data;
pub mod events;
mod impersonation;
mod lifecycle;
pub mod links;
mod personal_tokens;
pub(crate) mod rules;
pub(crate) mod session_token;
mod sessions;

#[cfg(feature = "throttle")]
pub(crate) use self::address::address_bucket;
pub(crate) use self::links::OneTimeLinks;
pub use self::personal_tokens::{IssuedToken, PersonalToken};
pub(crate) use self::rules::SessionRules;
pub use self::rules::Timeouts;
pub(crate) use self::session_token::SessionToken;
pub use self::sessions::{SessionInfo, SessionKind, Sessions};

/// A store and the rules its sessions follow. Cheap to clone: both are shared.
#[derive(Clone)]
pub(crate) struct SessionEngine {
    store: Arc<dyn DynStore>,
    rules: Arc<SessionRules>,
    events: Arc<events::EventSink>,
}

impl std::fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEngine")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl SessionEngine {
    #[cfg(test)]
    pub(crate) fn new(store: impl crate::store::SessionStore, rules: SessionRules) -> Self {
        Self::shared(Arc::new(store), rules)
    }

    pub(crate) fn shared(store: Arc<dyn DynStore>, rules: SessionRules) -> Self {
        Self {
            store,
            rules: Arc::new(rules),
            events: Arc::default(),
        }
    }

    /// The engine, sending its events to `events`.
    pub(crate) fn with_events(mut self, events: events::EventSink) -> Self {
        self.events = Arc::new(events);
        self
    }

    pub(crate) fn rules(&self) -> &SessionRules {
        &self.rules
    }

    /// Records `name` as used for `ttl` unless it already is: `true` for the one caller that
    /// recorded it, on every instance sharing the store (a second-factor code's single use).
    #[cfg_attr(not(feature = "two-factor"), allow(dead_code))]
    pub(crate) async fn claim_once(
        &self,
        name: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, crate::error::StoreError> {
        self.store.claim_once(name, ttl).await
    }
}

/// A session that is live right now: its key, its record, and its current idle deadline.
#[derive(Debug)]
pub(crate) struct ActiveSession {
    pub(crate) key: SessionKey,
    pub(crate) record: SessionRecord,
    pub(crate) expires_at: SystemTime,
    /// Whether resolving it just moved its idle deadline: a persistent cookie must then move
    /// its expiry too.
    pub(crate) refreshed: bool,
}

/// Whether a session lookup brings the session's data along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataNeed {
    /// Nothing will read the data: the record alone.
    RecordOnly,
    /// Something may read the data: bring it in the same read, where the store can.
    WithRecord,
}

/// Who logs in, and what their session remembers besides the profile.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) user_id: String,
    /// The app's profile of the user, as JSON.
    pub(crate) user: Box<RawValue>,
    pub(crate) roles: Vec<String>,
    pub(crate) ip: Option<String>,
    pub(crate) user_agent: Option<String>,
    /// The fingerprint of the credentials the login verified, if the app named them.
    pub(crate) credentials: Option<CredentialsVersion>,
    /// Whether the login asked for the longer, remembered lifetime.
    pub(crate) remember: bool,
    /// Whether the client gets a bearer token rather than a cookie.
    pub(crate) bearer: bool,
    /// How the user proved who they are, for the login's event.
    pub(crate) method: events::LoginMethod,
    /// Whether the throttle found no device cookie for the account on the request.
    pub(crate) new_device: bool,
    /// What the login proved: the password alone, or the password with the second factor
    /// still due (no login yet), or skipped on a trusted browser.
    pub(crate) factors: Factors,
}

/// What a rotation notes about the user's proof of identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reauth {
    /// Nothing: a new token for the same session.
    None,
    /// The password was just entered again.
    Password,
    /// The second factor was just proven, after the password: the session has both, and the
    /// time of the password entry stays what it was, so that a fresh check still needs a
    /// recent password.
    SecondFactor,
    /// A passkey was just used: something the user has and (by user verification) knows or
    /// is, so both factors at once, and fresh from now.
    #[cfg_attr(not(feature = "passkeys"), allow(dead_code))]
    Passkey,
}

/// What a store keeps to tell one version of a user's credentials from the next: a hash of
/// whatever the app names (its stored password hash, say), so the secret never reaches the
/// store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CredentialsVersion(String);

impl CredentialsVersion {
    pub(crate) fn of(version: &[u8]) -> Self {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"actix-login credentials\0")
            .chain_update(version)
            .finalize();
        // 128 bits tell versions apart; no one needs to find a preimage.
        Self(URL_SAFE_NO_PAD.encode(&digest[..16]))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A session just created or moved to a new token: the token goes to the client, once.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) token: SessionToken,
    pub(crate) session: ActiveSession,
}

#[cfg(test)]
mod tests;
