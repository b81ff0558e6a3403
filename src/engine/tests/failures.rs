//! Stores that fail or return garbage: an error, never a session or an anonymous answer.

use std::time::SystemTime;

use super::*;

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
        _: &SessionData,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn load(&self, _: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        Err(self.error())
    }

    async fn extend(&self, _: &SessionKey, _: SystemTime) -> Result<bool, StoreError> {
        Err(self.error())
    }

    async fn load_data(&self, _: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        Err(self.error())
    }

    async fn write_data(
        &self,
        _: &SessionKey,
        _: &[DataChange],
        _: usize,
    ) -> Result<DataWrite, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn update_user(
        &self,
        _: &SessionKey,
        _: &RawValue,
        _: &[String],
    ) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
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
        _: Carry,
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
        let outcome = engine
            .login(Some(&token.key()), None, grant("7"), true)
            .await;
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
