//! `store::contract` catches stores that break it: each store here is a `MemoryStore` with one
//! fault, and the contract must fail naming the rule the fault breaks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use actix_login::store::contract::check_session_store;
use actix_login::store::{Carry, DataChange, DataWrite, SessionKey, SessionRecord, SessionStore};
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
}

struct Broken {
    inner: MemoryStore,
    fault: Fault,
    /// Every record created, for a faulty `extend` to bring back.
    created: Mutex<HashMap<SessionKey, SessionRecord>>,
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
}

async fn check(fault: Fault) {
    check_session_store(|| async move {
        Broken {
            inner: MemoryStore::new(),
            fault,
            created: Mutex::default(),
        }
    })
    .await;
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
