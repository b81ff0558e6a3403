//! The engine's rules, checked against `MemoryStore` without any HTTP.

use std::future::Future;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;

use super::*;
use crate::store::{StoredSession, UserSessions};
use crate::{Error, MemoryStore, SessionStore, StoreError};

fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a test runtime")
        .block_on(future)
}

fn engine_with(store: MemoryStore, change: impl FnOnce(&mut SessionRules)) -> SessionEngine {
    let mut rules = SessionRules::default();
    change(&mut rules);
    SessionEngine::new(store, rules)
}

fn grant(user_id: &str) -> Grant {
    Grant {
        user_id: user_id.to_owned(),
        user: RawValue::from_string(format!(r#"{{"name":"{user_id}"}}"#)).unwrap(),
        roles: vec!["editor".to_owned()],
        ip: Some("192.0.2.7".to_owned()),
        user_agent: Some("test-agent".to_owned()),
        credentials: None,
    }
}

async fn login(engine: &SessionEngine, user_id: &str) -> Issued {
    engine.login(None, grant(user_id)).await.result.unwrap()
}

async fn is_live(engine: &SessionEngine, token: &SessionToken) -> bool {
    engine.resolve(token).await.unwrap().is_some()
}

#[test]
fn a_login_issues_a_token_that_resolves_to_its_record() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let issued = login(&engine, "7").await;
        let active = engine.resolve(&issued.token).await.unwrap().unwrap();
        let record = &active.record;
        assert_eq!(record.user_id(), "7");
        assert_eq!(record.user().get(), r#"{"name":"7"}"#);
        assert!(record.has_role("editor"));
        assert_eq!(record.ip(), Some("192.0.2.7"));
        assert_eq!(record.user_agent(), Some("test-agent"));
        assert_eq!(active.key, issued.token.key());
        assert!(record.expires_at() > active.expires_at);
    });
}

#[test]
fn login_ends_the_session_the_client_came_with() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let planted = login(&engine, "attacker").await;
        let outcome = engine
            .login(Some(&planted.token.key()), grant("victim"))
            .await;
        assert!(outcome.previous_ended);
        let fresh = outcome.result.unwrap();
        assert!(!is_live(&engine, &planted.token).await, "fixation");
        assert_ne!(fresh.token.key(), planted.token.key());
        assert!(is_live(&engine, &fresh.token).await);
        // A cookie that never was a session is "ended" as well: the client must drop it.
        let stranger = SessionToken::generate().unwrap();
        let outcome = engine.login(Some(&stranger.key()), grant("victim")).await;
        assert!(outcome.previous_ended && outcome.result.is_ok());
    });
}

#[test]
fn logout_ends_the_session_and_follows_a_concurrent_rotation() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let first = login(&engine, "7").await;
        engine.logout(&first.token.key(), None).await.unwrap();
        assert!(!is_live(&engine, &first.token).await);

        // Another request rotated the session after this one resolved it: the logout that
        // holds the old key must still end the session under its new key.
        let second = login(&engine, "7").await;
        let rotated = engine.rotate(&second.session, false).await.unwrap();
        engine
            .logout(&second.token.key(), Some(&second.session.record))
            .await
            .unwrap();
        assert!(!is_live(&engine, &rotated.token).await);
        assert!(engine.list("7", None).await.unwrap().is_empty());
    });
}

#[test]
fn rotation_kills_the_old_token_and_keeps_the_public_id() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let issued = login(&engine, "7").await;
        let created = issued.session.record.authenticated_at();
        std::thread::sleep(Duration::from_millis(5));
        let renewed = engine.rotate(&issued.session, false).await.unwrap();
        assert!(!is_live(&engine, &issued.token).await);
        let active = engine.resolve(&renewed.token).await.unwrap().unwrap();
        assert_eq!(active.record.id(), issued.session.record.id());
        assert_eq!(active.record.authenticated_at(), created);

        let confirmed = engine.rotate(&active, true).await.unwrap();
        let active = engine.resolve(&confirmed.token).await.unwrap().unwrap();
        assert!(active.record.authenticated_at() > created);
        assert!(engine
            .rules()
            .is_fresh(active.record.authenticated_at(), SystemTime::now()));
    });
}

#[test]
fn a_revoked_session_cannot_be_rotated_back_to_life() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let issued = login(&engine, "7").await;
        assert_eq!(engine.revoke_all("7").await.unwrap(), 1);
        let err = engine.rotate(&issued.session, false).await.unwrap_err();
        assert!(matches!(err, Error::Unauthenticated), "{err:?}");
        assert!(engine.list("7", None).await.unwrap().is_empty());
    });
}

#[test]
fn sessions_end_at_the_idle_deadline_and_at_the_absolute_end() {
    run(async {
        let idle = engine_with(MemoryStore::new(), |rules| {
            rules.set_idle_timeout(Duration::from_millis(60));
        });
        let issued = login(&idle, "7").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!is_live(&idle, &issued.token).await, "idle deadline");

        let absolute = engine_with(MemoryStore::new(), |rules| {
            rules.set_absolute_timeout(Duration::from_millis(150));
        });
        let issued = login(&absolute, "7").await;
        // Activity keeps moving the idle deadline, never past the absolute end.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let active = absolute.resolve(&issued.token).await.unwrap().unwrap();
            assert!(active.expires_at <= active.record.expires_at());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!is_live(&absolute, &issued.token).await, "absolute end");
    });
}

#[test]
fn the_idle_deadline_is_written_only_when_it_moves_by_a_tenth() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |rules| {
            rules.set_idle_timeout(Duration::from_secs(2));
        });
        let issued = login(&engine, "7").await;
        let key = issued.token.key();
        let stored_deadline = || async {
            SessionStore::load(&store, &key)
                .await
                .unwrap()
                .unwrap()
                .expires_at
        };
        let at_login = stored_deadline().await;
        engine.resolve(&issued.token).await.unwrap().unwrap();
        assert_eq!(stored_deadline().await, at_login, "wrote without need");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let active = engine.resolve(&issued.token).await.unwrap().unwrap();
        assert!(stored_deadline().await > at_login, "did not refresh");
        assert_eq!(stored_deadline().await, active.expires_at);
    });
}

#[test]
fn a_login_past_the_cap_ends_the_oldest_sessions() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |rules| {
            rules.set_max_sessions_per_user(2);
        });
        let oldest = login(&engine, "7").await;
        std::thread::sleep(Duration::from_millis(2));
        let middle = login(&engine, "7").await;
        std::thread::sleep(Duration::from_millis(2));
        let newest = login(&engine, "7").await;
        assert!(!is_live(&engine, &oldest.token).await);
        assert!(is_live(&engine, &middle.token).await);
        assert!(is_live(&engine, &newest.token).await);
        assert_eq!(engine.list("7", None).await.unwrap().len(), 2);
        // Another user's sessions are not touched by this user's cap.
        let other = login(&engine, "8").await;
        assert!(is_live(&engine, &other.token).await);
    });
}

#[test]
fn listing_marks_the_current_session_and_revocation_spares_it_on_request() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let mine = login(&engine, "7").await;
        let other = login(&engine, "7").await;
        let listed = engine.list("7", Some(&mine.token.key())).await.unwrap();
        assert_eq!(listed.len(), 2);
        let current: Vec<_> = listed.iter().filter(|s| s.current).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].id, mine.session.record.id());
        assert_eq!(current[0].ip.as_deref(), Some("192.0.2.7"));

        let revoked = engine
            .revoke_others("7", mine.session.record.id())
            .await
            .unwrap();
        assert_eq!(revoked, 1);
        assert!(is_live(&engine, &mine.token).await);
        assert!(!is_live(&engine, &other.token).await);
        // Revoking by public id never reaches another user's session.
        let theirs = login(&engine, "8").await;
        let id = theirs.session.record.id();
        assert!(!engine.revoke("7", id).await.unwrap());
        assert!(is_live(&engine, &theirs.token).await);
    });
}

/// A store whose every operation fails the way a vanished Redis does, or whose records are all
/// unreadable.
#[derive(Clone, Copy)]
enum Broken {
    Down,
    Corrupt,
}

impl Broken {
    fn error(self) -> StoreError {
        match self {
            Broken::Down => StoreError::Timeout,
            Broken::Corrupt => StoreError::corrupt("garbage"),
        }
    }
}

impl SessionStore for Broken {
    async fn create(
        &self,
        _: &SessionKey,
        _: &SessionRecord,
        _: SystemTime,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn load(&self, _: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        Err(self.error())
    }

    async fn extend(
        &self,
        _: &SessionKey,
        _: &SessionRecord,
        _: SystemTime,
    ) -> Result<bool, StoreError> {
        Err(self.error())
    }

    async fn delete(&self, _: &SessionKey) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn list(&self, _: &str) -> Result<UserSessions, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn rotate(
        &self,
        _: &SessionKey,
        _: &SessionKey,
        _: &SessionRecord,
        _: SystemTime,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }
}

#[test]
fn a_failing_store_is_an_error_never_a_session_or_an_anonymous_answer() {
    run(async {
        let engine = SessionEngine::new(Broken::Down, SessionRules::default());
        let token = SessionToken::generate().unwrap();
        assert!(matches!(
            engine.resolve(&token).await,
            Err(StoreError::Timeout)
        ));
        let outcome = engine.login(Some(&token.key()), grant("7")).await;
        assert!(!outcome.previous_ended, "the old session may still be live");
        assert!(matches!(outcome.result, Err(Error::Store(_))));
        assert!(matches!(
            engine.logout(&token.key(), None).await,
            Err(Error::Store(_))
        ));
        assert!(matches!(engine.revoke_all("7").await, Err(Error::Store(_))));
    });
}

#[test]
fn an_unreadable_record_is_no_session() {
    run(async {
        let engine = SessionEngine::new(Broken::Corrupt, SessionRules::default());
        let token = SessionToken::generate().unwrap();
        assert!(engine.resolve(&token).await.unwrap().is_none());
    });
}

/// A `MemoryStore` whose first `gated` listings wait for each other, which forces concurrent
/// logins to interleave at their listings: each sees what the store held before any of them
/// wrote.
#[derive(Clone)]
struct ListingsMeet {
    inner: MemoryStore,
    barrier: std::sync::Arc<tokio::sync::Barrier>,
    gated: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ListingsMeet {
    fn new(parties: usize) -> Self {
        Self {
            inner: MemoryStore::new(),
            barrier: std::sync::Arc::new(tokio::sync::Barrier::new(parties)),
            gated: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(parties)),
        }
    }
}

impl SessionStore for ListingsMeet {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        SessionStore::create(&self.inner, key, record, expires_at).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        SessionStore::load(&self.inner, key).await
    }

    async fn extend(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        SessionStore::extend(&self.inner, key, record, expires_at).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        SessionStore::delete(&self.inner, key).await
    }

    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        use std::sync::atomic::Ordering;
        let gated = self
            .gated
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        // Read first, then wait: every gated listing answers with what was there before any of
        // the others went on to write.
        let listing = SessionStore::list(&self.inner, user_id).await;
        if gated {
            self.barrier.wait().await;
        }
        listing
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        SessionStore::rotate(&self.inner, old, new, record, expires_at).await
    }
}

#[test]
fn parallel_logins_never_leave_more_sessions_than_the_cap() {
    for parallel in [2, 3] {
        run(async {
            let store = ListingsMeet::new(parallel);
            let engine = SessionEngine::new(store.clone(), {
                let mut rules = SessionRules::default();
                rules.set_max_sessions_per_user(1);
                rules
            });
            let logins = (0..parallel).map(|_| engine.login(None, grant("7")));
            let outcomes = futures_util::future::join_all(logins).await;
            let mut issued = Vec::new();
            for outcome in outcomes {
                issued.push(outcome.result.unwrap());
            }
            let mut live = 0;
            for login in &issued {
                live += usize::from(is_live(&engine, &login.token).await);
            }
            assert_eq!(
                live, 1,
                "{parallel} parallel logins left {live} live sessions"
            );
            assert_eq!(engine.list("7", None).await.unwrap().len(), 1);
        });
    }
}

fn grant_verified(user_id: &str, version: &str) -> Grant {
    Grant {
        credentials: Some(CredentialsVersion::of(version.as_bytes())),
        ..grant(user_id)
    }
}

#[test]
fn a_login_that_verified_replaced_credentials_leaves_no_session() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |_| {});
        let other_device = login(&engine, "7").await;
        // The password changes from version 1 to 2 while a login that checked version 1 is
        // still on its way: it completes after the change revoked the user's sessions.
        let v2 = CredentialsVersion::of(b"2");
        assert_eq!(engine.credentials_changed("7", &v2, None).await.unwrap(), 1);
        assert!(!is_live(&engine, &other_device.token).await);

        // Without naming what it verified, such a login survives the change: the hole.
        let unchecked = login(&engine, "7").await;
        assert!(is_live(&engine, &unchecked.token).await);
        engine.revoke_all("7").await.unwrap();

        // Naming it closes the hole: no session, nothing left in the store.
        let outcome = engine.login(None, grant_verified("7", "1")).await;
        assert!(matches!(outcome.result, Err(Error::Unauthenticated)));
        assert!(engine.list("7", None).await.unwrap().is_empty());
        assert!(store.is_empty());
        // The new password's logins go on as usual.
        let fresh = engine.login(None, grant_verified("7", "2")).await;
        assert!(is_live(&engine, &fresh.result.unwrap().token).await);
    });
}

/// A `MemoryStore` whose first credentials-version read waits until the test lets it go, so a
/// password change can run between a login's create and its check.
#[derive(Clone)]
struct CheckWaits {
    inner: MemoryStore,
    arrived: std::sync::Arc<tokio::sync::Notify>,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

impl SessionStore for CheckWaits {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        SessionStore::create(&self.inner, key, record, expires_at).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        SessionStore::load(&self.inner, key).await
    }

    async fn extend(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        SessionStore::extend(&self.inner, key, record, expires_at).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        SessionStore::delete(&self.inner, key).await
    }

    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        SessionStore::list(&self.inner, user_id).await
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        SessionStore::rotate(&self.inner, old, new, record, expires_at).await
    }

    async fn credentials_version(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        self.arrived.notify_one();
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        SessionStore::credentials_version(&self.inner, user_id).await
    }

    async fn set_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        SessionStore::set_credentials_version(&self.inner, user_id, version, keep_for).await
    }
}

#[test]
fn a_change_between_a_logins_write_and_its_check_still_wins() {
    run(async {
        let store = CheckWaits {
            inner: MemoryStore::new(),
            arrived: std::sync::Arc::new(tokio::sync::Notify::new()),
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let engine = SessionEngine::new(store.clone(), SessionRules::default());
        let racing_login = engine.login(None, grant_verified("7", "1"));
        let change = async {
            store.arrived.notified().await;
            let v2 = CredentialsVersion::of(b"2");
            engine.credentials_changed("7", &v2, None).await.unwrap();
            store.gate.add_permits(1);
        };
        let (outcome, ()) = futures_util::future::join(racing_login, change).await;
        assert!(matches!(outcome.result, Err(Error::Unauthenticated)));
        assert!(engine.list("7", None).await.unwrap().is_empty());
        assert!(store.inner.is_empty());
    });
}
