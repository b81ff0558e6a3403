//! An in-process store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::{SessionStore, StoredSession};
use crate::{SessionKey, SessionRecord, StoreError};

/// How many creations pass between sweeps of expired records.
const SWEEP_EVERY: u32 = 1024;

/// Keeps sessions in this process's memory, with the same expiry rules as [`RedisStore`].
///
/// For development, tests and single-process apps that accept losing every session on restart.
/// Clones share the same sessions. Expired records are dropped when they are read and in a
/// sweep every 1024 logins, so memory stays bounded by the number of live sessions.
///
/// [`RedisStore`]: super::RedisStore
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionKey, StoredSession>,
    creations_since_sweep: u32,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of records held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation leaves the map half-updated, so a panic elsewhere cannot corrupt it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// The live entry under `key`, dropping it if it has expired.
    fn live(&mut self, key: &SessionKey, now: SystemTime) -> Option<&mut StoredSession> {
        if self.sessions.get(key).is_some_and(|s| s.expires_at <= now) {
            self.sessions.remove(key);
        }
        self.sessions.get_mut(key)
    }

    fn sweep(&mut self, now: SystemTime) {
        self.sessions.retain(|_, s| s.expires_at > now);
        self.creations_since_sweep = 0;
    }
}

impl SessionStore for MemoryStore {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        inner.creations_since_sweep += 1;
        if inner.creations_since_sweep >= SWEEP_EVERY {
            inner.sweep(now);
        }
        if inner.live(key, now).is_some() {
            return Ok(false);
        }
        let stored = StoredSession {
            record: record.clone(),
            expires_at,
        };
        inner.sessions.insert(key.clone(), stored);
        Ok(true)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        Ok(self.lock().live(key, SystemTime::now()).cloned())
    }

    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.live(key, SystemTime::now()) {
            Some(stored) => {
                stored.expires_at = expires_at;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let was_live = inner.live(key, now).is_some();
        inner.sessions.remove(key);
        Ok(was_live)
    }
}
