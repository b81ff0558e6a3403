//! Stores that fail or return garbage: an error, never a session or an anonymous answer.

use std::time::SystemTime;

use super::*;
use crate::engine::events::RevokedBy;
use crate::engine::links::{LinkPurpose, OneTimeLinks, Recipient};
use crate::record::{LinkKey, LinkRecord};

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

    async fn admit_anonymous(&self, _: &[Counter<'_>]) -> Result<Admission, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn credentials_version(&self, _: &str) -> Result<Option<String>, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn create_link(&self, _: &LinkKey, _: &LinkRecord) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }

    async fn load_link(&self, _: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        Err(self.error())
    }

    async fn take_link(&self, _: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        Err(self.error())
    }
}

/// A secret of the right shape (32 zero bytes), so that it reaches the store.
fn well_formed_secret() -> String {
    "A".repeat(43)
}

#[test]
fn a_failing_store_fails_link_requests_with_a_store_error_never_a_link_or_invalid_link() {
    run(async {
        let engine = SessionEngine::new(Broken::Down, SessionRules::default());
        let links = OneTimeLinks::new(engine, None);
        let to = Recipient::new("7", "ann@example.test");
        for to in [Some(to), None] {
            let issued = links.issue(LinkPurpose::SignIn, "ann", to).await;
            assert!(matches!(issued, Err(Error::Store(_))), "{issued:?}");
        }
        let secret = well_formed_secret();
        let peeked = links.peek(LinkPurpose::SignIn, &secret).await;
        assert!(matches!(peeked, Err(Error::Store(_))), "{peeked:?}");
        let used = links.consume(LinkPurpose::SignIn, &secret).await;
        assert!(matches!(used, Err(Error::Store(_))), "{used:?}");
    });
}

#[test]
fn an_unreadable_link_is_an_invalid_link() {
    run(async {
        let engine = SessionEngine::new(Broken::Corrupt, SessionRules::default());
        let links = OneTimeLinks::new(engine, None);
        let secret = well_formed_secret();
        for take in [false, true] {
            let answer = if take {
                links.consume(LinkPurpose::PasswordReset, &secret).await
            } else {
                links.peek(LinkPurpose::PasswordReset, &secret).await
            };
            assert!(matches!(answer, Err(Error::InvalidLink)), "{answer:?}");
        }
    });
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
        assert!(matches!(
            engine.revoke_all("7", RevokedBy::App).await,
            Err(Error::Store(_))
        ));
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
