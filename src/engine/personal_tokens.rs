//! Personal access tokens: bearer sessions that a logged-in user creates for scripts and other
//! clients, each with a name, an optional end and optional scopes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use super::events::SecurityEvent;
use super::lifecycle::random_id;
use super::{ActiveSession, Issued, SessionEngine, SessionKey, SessionRecord, SessionToken};
use crate::error::Error;
use crate::record::Lifetime;
use crate::record::SessionData;
use crate::store::{Admission, Counter};

/// The longest token name accepted, in bytes.
pub(crate) const MAX_TOKEN_NAME: usize = 64;
/// The most scopes one token may carry, and the longest scope name, in bytes.
const MAX_SCOPES: usize = 32;
const MAX_SCOPE_LEN: usize = 64;

/// A personal access token to create with
/// [`Session::create_token`](crate::Session::create_token): a name the user will recognise in
/// their session list, and optionally an end and the scopes it is limited to.
///
/// ```
/// use std::time::Duration;
/// use actix_login::PersonalToken;
///
/// let token = PersonalToken::new("deploy script")
///     .expires_in(Duration::from_secs(90 * 24 * 60 * 60))
///     .scopes(["deploy"]);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PersonalToken {
    pub(crate) name: String,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) scopes: Option<Vec<String>>,
}

impl PersonalToken {
    /// A token named `name` (1 to 64 bytes), without an end, allowed everything its user may
    /// do.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            expires_in: None,
            scopes: None,
        }
    }

    /// Ends the token this long after its creation. Without it the token lasts until it is
    /// revoked, the user's password changes or the user logs out everywhere; one created by a
    /// login token also ends with that login token, and never after it.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    /// Limits the token to `scopes`: routes guarded by [`Require::scope`](crate::Require::scope)
    /// let it through only for one of these (at most 32, each 1 to 64 bytes). Other sessions
    /// pass every scope check.
    ///
    /// Scopes limit the routes that ask for one, nothing else: on a route without
    /// `Require::scope` the token acts as its user. Guard account routes (listing and ending
    /// sessions, changing the password) with a scope of their own, or check
    /// [`AuthUser::token_name`](crate::AuthUser::token_name), if a narrow token must not reach
    /// them. A token never creates tokens: it is never fresh (see
    /// [`Session::create_token`](crate::Session::create_token)).
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    fn check(&self) -> Result<(), Error> {
        let name_ok = !self.name.trim().is_empty() && self.name.len() <= MAX_TOKEN_NAME;
        let scopes_ok = self.scopes.as_ref().is_none_or(|scopes| {
            scopes.len() <= MAX_SCOPES
                && scopes
                    .iter()
                    .all(|s| !s.is_empty() && s.len() <= MAX_SCOPE_LEN)
        });
        let lifetime_ok = self.expires_in.is_none_or(|d| !d.is_zero());
        if name_ok && scopes_ok && lifetime_ok {
            Ok(())
        } else {
            Err(Error::InvalidInput)
        }
    }
}

/// A bearer token just issued: the secret to hand to the client, once, and the session's public
/// id.
///
/// Serialises as `{"id","token","expires_at"}` (`expires_at` in Unix seconds, `null` for a token
/// without an end). Its `Debug` output leaves the secret out.
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct IssuedToken {
    /// The session's public id, as [`Session::list_sessions`](crate::Session::list_sessions)
    /// shows it and [`Session::revoke_session`](crate::Session::revoke_session) takes it.
    pub id: String,
    /// The secret the client sends as `Authorization: Bearer <token>`. Only a hash of it is
    /// stored: it cannot be shown again.
    pub token: String,
    /// When the token ends at the latest; `None` for a personal access token without an end.
    #[serde(serialize_with = "optional_unix_seconds")]
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl IssuedToken {
    pub(crate) fn new(issued: &Issued, has_end: bool) -> Self {
        Self {
            id: issued.session.record.id().to_owned(),
            token: issued.token.as_str().to_owned(),
            expires_at: has_end.then(|| issued.session.record.expires_at()),
        }
    }
}

fn optional_unix_seconds<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_u64(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()),
        None => s.serialize_none(),
    }
}

impl SessionEngine {
    /// Creates a personal access token for the user of `owner`, with the user's live profile
    /// and roles, noting the creating client's address and agent.
    ///
    /// A token is an account change: only a login whose password was entered within the fresh
    /// window may create one, which a personal access token never is, so tokens cannot create
    /// tokens. A login token (from a bearer login) may; what it creates ends when it does (by
    /// logout, revocation, expiry or a password change), and ends no later than its absolute
    /// end. Each user may hold a limited number of tokens and create a limited number per
    /// window; the count is kept in the store's counters, so it holds across app instances.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a name, lifetime or scope list out of bounds;
    /// [`Error::ReauthRequired`] unless `owner` is a fresh login
    /// ([`Error::SecondFactorReauthRequired`] if its account's second factor is not);
    /// [`Error::Forbidden`] for a
    /// scope the owner lacks; [`Error::TooManyTokens`] at the per-user limit;
    /// [`Error::TokenRateLimited`] past the creation rate; [`Error::Unauthenticated`] if the
    /// owner's session ended while the token was being created (the token is then gone too).
    pub(crate) async fn create_token(
        &self,
        owner: &ActiveSession,
        spec: PersonalToken,
        client: (Option<String>, Option<String>),
    ) -> Result<IssuedToken, Error> {
        spec.check()?;
        let now = SystemTime::now();
        self.rules.check_fresh(&owner.record, now)?;
        let scopes = narrowed_scopes(owner.record.scopes(), spec.scopes)?;
        let user_id = owner.record.user_id();
        let max = self.rules.max_tokens_per_user();
        if self.count_tokens(user_id).await? >= max {
            return Err(Error::TooManyTokens);
        }
        self.admit_token(user_id).await?;
        // The profile and roles as they are now, not as this request loaded them: a live
        // update that ran since must not be undone by a token copying the old ones.
        let Some(live_owner) = self.store.load(&owner.key).await? else {
            return Err(Error::Unauthenticated);
        };
        let mut end = self.rules.token_end(now, spec.expires_in);
        let mut has_end = spec.expires_in.is_some();
        let owner_end = owner.record.expires_at();
        let owner_has_end = !self.rules.is_endless(owner.record.created_at(), owner_end);
        if owner.record.is_bearer() && owner_has_end && owner_end < end {
            end = owner_end;
            has_end = true;
        }
        // A login token's tokens end with it. A browser session's outlive it: making a token
        // for a script is what a browser session is for.
        let parent = owner.record.is_login_token().then_some(&owner.key);
        let record = SessionRecord::new(
            random_id()?,
            user_id,
            live_owner.record.user().to_owned(),
            now,
            end,
        )
        .with_roles(live_owner.record.roles().to_vec())
        .with_client(client.0, client.1)
        .with_method(live_owner.record.method())
        .personal_token(spec.name, scopes, parent);
        let expires_at = self
            .rules
            .idle_deadline_of(Lifetime::Fixed, now, record.expires_at());
        let token = SessionToken::generate().map_err(Error::Random)?;
        let key = token.key();
        if !self
            .store
            .create(&key, &record, expires_at, &SessionData::new())
            .await?
        {
            return Err(crate::StoreError::unavailable("store refused a fresh session key").into());
        }
        match self.settle_token(owner, &key, &record).await {
            Ok(record) => {
                tracing::info!(
                    session = key.short(),
                    user_id = record.user_id(),
                    "personal access token created"
                );
                self.note(SecurityEvent::token_created(&record)).await;
                let session = ActiveSession {
                    key,
                    record,
                    expires_at,
                    refreshed: false,
                };
                Ok(IssuedToken::new(&Issued { token, session }, has_end))
            }
            Err(err) => {
                // Never hand out a token whose creation did not complete.
                let _ = self.store.delete(&key).await;
                Err(err)
            }
        }
    }

    /// After the token under `key` is created and indexed: checks that its owner is still
    /// live, gives it the owner's profile if a live update changed it meanwhile, and checks
    /// the per-user limit again, since racing creations each passed the first check.
    async fn settle_token(
        &self,
        owner: &ActiveSession,
        key: &SessionKey,
        record: &SessionRecord,
    ) -> Result<SessionRecord, Error> {
        // A revocation that listed the user's sessions before this one was indexed must still
        // end it: the owner outliving the creation proves no such revocation finished first
        // (revocation lists again after each round of deletions). A live update that listed
        // them before is caught the same way: either it had already changed the owner, which
        // this load sees, or its next listing finds the token.
        let Some(live_owner) = self.store.load(&owner.key).await? else {
            return Err(Error::Unauthenticated);
        };
        let mut record = record.clone();
        let (user, roles) = (live_owner.record.user(), live_owner.record.roles());
        if record.user().get() != user.get() || record.roles() != roles {
            if !self.store.update_user(key, user, roles).await? {
                return Err(Error::Unauthenticated);
            }
            record = record.with_user(user.to_owned(), roles.to_vec());
        }
        // Each racing creation counts after its own write: whichever counts last sees them
        // all, so the limit holds (racing creations past it may all be refused).
        if self.count_tokens(record.user_id()).await? > self.rules.max_tokens_per_user() {
            return Err(Error::TooManyTokens);
        }
        Ok(record)
    }

    /// Counts a token creation against the user's creation limit.
    async fn admit_token(&self, user_id: &str) -> Result<(), Error> {
        let (max, window) = self.rules.token_creation_limit();
        let name = format!("tok:{user_id}");
        let counter = Counter {
            name: &name,
            max,
            window,
        };
        match self.store.admit_anonymous(&[counter]).await? {
            Admission::Admitted => Ok(()),
            Admission::Refused { retry_after } => {
                tracing::warn!(
                    user_id,
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "refused a personal access token: too many created lately"
                );
                Err(Error::TokenRateLimited { retry_after })
            }
        }
    }
}

/// The scopes a new token gets: what it asks for, which an owner limited to scopes must hold
/// every one of; an owner limited to scopes that asks for none passes its own on.
fn narrowed_scopes(
    owner: Option<&[String]>,
    requested: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, Error> {
    match (owner, requested) {
        (None, requested) => Ok(requested),
        (Some(own), None) => Ok(Some(own.to_vec())),
        (Some(own), Some(requested)) => {
            if requested.iter().all(|scope| own.contains(scope)) {
                Ok(Some(requested))
            } else {
                Err(Error::Forbidden)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrow_owner_cannot_widen_a_token() {
        let own = vec!["read".to_owned()];
        assert!(matches!(
            narrowed_scopes(Some(&own), Some(vec!["write".into()])),
            Err(Error::Forbidden)
        ));
        assert_eq!(
            narrowed_scopes(Some(&own), None).unwrap(),
            Some(own.clone())
        );
        assert_eq!(
            narrowed_scopes(None, Some(vec!["write".into()])).unwrap(),
            Some(vec!["write".to_owned()])
        );
        assert_eq!(narrowed_scopes(None, None).unwrap(), None);
    }

    #[test]
    fn names_scopes_and_lifetimes_are_bounded() {
        assert!(PersonalToken::new("ci").check().is_ok());
        for bad in [
            PersonalToken::new(""),
            PersonalToken::new("   "),
            PersonalToken::new("x".repeat(65)),
            PersonalToken::new("ci").expires_in(Duration::ZERO),
            PersonalToken::new("ci").scopes([""]),
            PersonalToken::new("ci").scopes(["s".repeat(65)]),
            PersonalToken::new("ci").scopes((0..33).map(|i| i.to_string())),
        ] {
            assert!(matches!(bad.check(), Err(Error::InvalidInput)), "{bad:?}");
        }
    }
}
