//! Where session records live.
//!
//! [`SessionStore`] is the whole contract between the middleware and a backend: four operations
//! on one record at a time. The crate ships [`RedisStore`] for production and [`MemoryStore`]
//! for development and tests; any other backend only has to implement the trait.

use std::future::Future;
use std::time::SystemTime;

use futures_util::future::LocalBoxFuture;

use crate::{SessionKey, SessionRecord, StoreError};

pub mod memory;
pub mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreBuilder};

/// A record together with the moment it will expire unless it is extended.
#[derive(Clone, Debug)]
pub struct StoredSession {
    /// The record as it was created.
    pub record: SessionRecord,
    /// When the store will forget the record: the idle deadline, never later than
    /// [`SessionRecord::expires_at`].
    pub expires_at: SystemTime,
}

/// A backend that keeps session records.
///
/// Every method works on a single key, and no method may bring back a record that is gone: a
/// logout or revocation that deletes a record must win over any concurrent
/// [`extend`](SessionStore::extend). That is what makes logout immediate.
///
/// Futures need not be `Send`: Actix runs each request on one worker thread. The store itself is
/// shared by all workers, hence `Send + Sync`.
///
/// # Implementing
///
/// Stores may return records past `expires_at` (the middleware checks the time itself), but
/// should free them eventually. Times are absolute; a store that works with relative TTLs, as
/// Redis does, converts with its own clock at the moment of the call.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores `record` under `key` until `expires_at`, unless the key is taken.
    ///
    /// Returns `Ok(false)` if a record already exists under `key`; it is left untouched.
    fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Fetches the record under `key`, or `None` if there is none (never created, deleted, or
    /// expired).
    fn load(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<StoredSession>, StoreError>>;

    /// Moves the expiry of an existing record to `expires_at`.
    ///
    /// Returns `Ok(false)`, and creates nothing, if there is no record under `key`.
    fn extend(
        &self,
        key: &SessionKey,
        expires_at: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Removes the record under `key`. Returns whether there was one.
    fn delete(&self, key: &SessionKey) -> impl Future<Output = Result<bool, StoreError>>;
}

/// [`SessionStore`] behind a vtable, so the middleware and extractors need no type parameter.
pub(crate) trait DynStore: Send + Sync {
    fn create<'a>(
        &'a self,
        key: &'a SessionKey,
        record: &'a SessionRecord,
        expires_at: SystemTime,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn load<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<StoredSession>, StoreError>>;

    fn extend<'a>(
        &'a self,
        key: &'a SessionKey,
        expires_at: SystemTime,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn delete<'a>(&'a self, key: &'a SessionKey) -> LocalBoxFuture<'a, Result<bool, StoreError>>;
}

impl<S: SessionStore> DynStore for S {
    fn create<'a>(
        &'a self,
        key: &'a SessionKey,
        record: &'a SessionRecord,
        expires_at: SystemTime,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::create(self, key, record, expires_at))
    }

    fn load<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        Box::pin(SessionStore::load(self, key))
    }

    fn extend<'a>(
        &'a self,
        key: &'a SessionKey,
        expires_at: SystemTime,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::extend(self, key, expires_at))
    }

    fn delete<'a>(&'a self, key: &'a SessionKey) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::delete(self, key))
    }
}
