//! `store::contract` catches stores that break it: each store here is a `MemoryStore` with one
//! fault, and the contract must fail naming the rule the fault breaks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use actix_login::store::contract::{check_claims, check_one_time_links, check_session_store};
use actix_login::store::{Carry, DataChange, DataWrite, LinkKey, LinkRecord};
use actix_login::store::{SessionKey, SessionRecord, SessionStore};
use actix_login::store::{StoredSession, UserSessions};
use actix_login::{MemoryStore, SessionData, StoreError};
use serde_json::value::RawValue;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// `rotate` deletes the old record before it creates the new one.
    RotateDeletesFirst,
    /// `extend` writes the record whether or not it exists.
    ExtendCreates,
    /// A refused `create` overwrites the record anyway.
    CreateOverwrites,
    /// `list` finds nothing, as if `create` never indexed.
    ListSeesNothing,
    /// `delete` always reports there was a record.
    DeleteAlwaysTrue,
    /// `take_link` returns the link and leaves it in place.
    TakeLeavesLink,
    /// `take_link` reads, yields, then deletes: not one atomic step.
    TakeInTwoSteps,
    /// `claim_once` grants every claim.
    ClaimAlwaysGranted,
    /// `claim_once` looks, yields, then records: not one atomic step.
    ClaimInTwoSteps,
}

struct Broken {
    inner: MemoryStore,
    fault: Fault,
    /// Every record created, for a faulty `extend` to bring back.
    created: Mutex<HashMap<SessionKey, SessionRecord>>,
    /// The names a faulty `claim_once` recorded, and until when.
    claimed: Mutex<HashMap<String, SystemTime>>,
}

async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

impl SessionStore for Broken {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
    ) -> Result<bool, StoreError> {
        self.created
            .lock()
            .unwrap()
            .insert(key.clone(), record.clone());
        if self.fault == Fault::CreateOverwrites {
            let taken = self.inner.delete(key).await?;
            self.inner.create(key, record, expires_at, data).await?;
            return Ok(!taken);
        }
        self.inner.create(key, record, expires_at, data).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        self.inner.load(key).await
    }
    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let remembered = self.created.lock().unwrap().get(key).cloned();
        if let (Fault::ExtendCreates, Some(record)) = (self.fault, remembered) {
            self.inner.delete(key).await?;
            return self
                .inner
                .create(key, &record, expires_at, &SessionData::new())
                .await;
        }
        self.inner.extend(key, expires_at).await
    }
    async fn load_data(&self, key: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        self.inner.load_data(key).await
    }
    async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> Result<DataWrite, StoreError> {
        self.inner.write_data(key, changes, max_size).await
    }
    async fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        self.inner.update_user(key, user, roles).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let was = self.inner.delete(key).await?;
        Ok(was || self.fault == Fault::DeleteAlwaysTrue)
    }
    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        if self.fault == Fault::ListSeesNothing {
            return Ok(UserSessions::default());
        }
        self.inner.list(user_id).await
    }
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<bool, StoreError> {
        if self.fault == Fault::RotateDeletesFirst {
            let data = self.inner.load_data(old).await?.unwrap_or_default();
            if !self.inner.delete(old).await? {
                return Ok(false);
            }
            yield_once().await;
            return self.inner.create(new, record, expires_at, &data).await;
        }
        self.inner.rotate(old, new, record, expires_at, carry).await
    }
    async fn create_link(&self, key: &LinkKey, record: &LinkRecord) -> Result<bool, StoreError> {
        self.inner.create_link(key, record).await
    }
    async fn load_link(&self, key: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        self.inner.load_link(key).await
    }
    async fn take_link(&self, key: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        match self.fault {
            Fault::TakeLeavesLink => self.inner.load_link(key).await,
            Fault::TakeInTwoSteps => {
                let found = self.inner.load_link(key).await?;
                yield_once().await;
                self.inner.take_link(key).await?;
                Ok(found)
            }
            _ => self.inner.take_link(key).await,
        }
    }
    async fn claim_once(&self, name: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        match self.fault {
            Fault::ClaimAlwaysGranted => Ok(true),
            Fault::ClaimInTwoSteps => {
                let now = SystemTime::now();
                let taken = self
                    .claimed
                    .lock()
                    .unwrap()
                    .get(name)
                    .is_some_and(|until| *until > now);
                yield_once().await;
                if !taken {
                    self.claimed
                        .lock()
                        .unwrap()
                        .insert(name.to_owned(), now + ttl);
                }
                Ok(!taken)
            }
            _ => self.inner.claim_once(name, ttl).await,
        }
    }
}

/// A memory store with `fault`.
fn broken(fault: Fault) -> Broken {
    Broken {
        inner: MemoryStore::new(),
        fault,
        created: Mutex::default(),
        claimed: Mutex::default(),
    }
}

async fn check(fault: Fault) {
    check_session_store(|| async move { broken(fault) }).await;
}

#[actix_web::test]
#[should_panic(expected = "revocation wins over concurrent rotation")]
async fn rotate_deletes_first() {
    check(Fault::RotateDeletesFirst).await
}

#[actix_web::test]
#[should_panic(expected = "extend never creates")]
async fn extend_creates() {
    check(Fault::ExtendCreates).await
}

#[actix_web::test]
#[should_panic(expected = "a refused create leaves the record untouched")]
async fn create_overwrites() {
    check(Fault::CreateOverwrites).await
}

#[actix_web::test]
#[should_panic(expected = "a record is indexed before create returns")]
async fn list_sees_nothing() {
    check(Fault::ListSeesNothing).await
}

#[actix_web::test]
#[should_panic(expected = "delete returns whether there was a record")]
async fn delete_always_true() {
    check(Fault::DeleteAlwaysTrue).await
}

async fn check_links(fault: Fault) {
    check_one_time_links(|| async move { broken(fault) }).await;
}

#[actix_web::test]
#[should_panic(expected = "a link is taken once")]
async fn take_leaves_link() {
    check_links(Fault::TakeLeavesLink).await
}

#[actix_web::test]
#[should_panic(expected = "of racing takes exactly one gets the link")]
async fn take_in_two_steps() {
    check_links(Fault::TakeInTwoSteps).await
}

async fn check_claims_of(fault: Fault) {
    check_claims(|| async move { broken(fault) }).await;
}

#[actix_web::test]
#[should_panic(expected = "claim_once refuses a name while its claim stands")]
async fn claim_always_granted() {
    check_claims_of(Fault::ClaimAlwaysGranted).await
}

#[actix_web::test]
#[should_panic(expected = "of racing claims of one name exactly one is granted")]
async fn claim_in_two_steps() {
    check_claims_of(Fault::ClaimInTwoSteps).await
}

/// A store written before one-time links existed still compiles: the methods answer with an
/// error by default, which the link contract reports.
#[actix_web::test]
#[should_panic(expected = "keeps no one-time links")]
async fn a_store_without_links_fails_the_link_contract() {
    check_one_time_links(|| async { Plain(MemoryStore::new()) }).await;
}

/// A store written before single-use claims existed still compiles: `claim_once` answers with
/// an error by default, which the claim contract reports (and second-factor codes get `503`).
#[actix_web::test]
#[should_panic(expected = "keeps no single-use claims")]
async fn a_store_without_claims_fails_the_claim_contract() {
    check_claims(|| async { Plain(MemoryStore::new()) }).await;
}

/// A store written against the required methods alone, forwarding them to a `MemoryStore`:
/// every optional method keeps its default.
struct Plain(MemoryStore);

impl SessionStore for Plain {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
    ) -> Result<bool, StoreError> {
        self.0.create(key, record, expires_at, data).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        self.0.load(key).await
    }
    async fn extend(&self, key: &SessionKey, at: SystemTime) -> Result<bool, StoreError> {
        self.0.extend(key, at).await
    }
    async fn load_data(&self, key: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        self.0.load_data(key).await
    }
    async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> Result<DataWrite, StoreError> {
        self.0.write_data(key, changes, max_size).await
    }
    async fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        self.0.update_user(key, user, roles).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.0.delete(key).await
    }
    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        self.0.list(user_id).await
    }
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<bool, StoreError> {
        self.0.rotate(old, new, record, expires_at, carry).await
    }
}
