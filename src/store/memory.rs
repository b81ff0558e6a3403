//! An in-process store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;

use super::{
    Admission, Carry, Counter, DataWrite, LoadedSession, SessionStore, StoredSession,
    ThrottleStore, UserSessions,
};
use crate::error::StoreError;
use crate::record::{DataChange, LinkKey, LinkRecord, SessionData, SessionKey, SessionRecord};

/// How many creations pass between sweeps of expired records.
const SWEEP_EVERY: u32 = 1024;

/// Keeps sessions in this process's memory, with the same expiry rules as [`RedisStore`].
///
/// For development, tests and single-process apps that accept losing every session on restart.
/// Clones share the same sessions. Expired records are dropped when they are read and in a
/// sweep every 1024 logins, so memory stays bounded by the number of live sessions.
///
/// [`RedisStore`]: crate::RedisStore
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionKey, Entry>,
    by_user: HashMap<String, HashSet<SessionKey>>,
    counters: HashMap<String, (i64, SystemTime)>,
    /// Each user's credentials version, and until when it is kept.
    credentials: HashMap<String, (String, SystemTime)>,
    /// One-time links, each until its own `expires_at`.
    links: HashMap<LinkKey, LinkRecord>,
    /// Single-use claims (second-factor codes), each until its own end.
    claims: HashMap<String, SystemTime>,
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
        // No operation leaves the maps half-updated, so a panic elsewhere cannot corrupt them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One session: its record and deadline, and its data.
#[derive(Debug)]
struct Entry {
    stored: StoredSession,
    data: SessionData,
}

impl Inner {
    /// The live entry under `key`, dropping it if it has expired.
    fn live(&mut self, key: &SessionKey, now: SystemTime) -> Option<&mut Entry> {
        if self
            .sessions
            .get(key)
            .is_some_and(|e| e.stored.expires_at <= now)
        {
            self.remove(key);
        }
        self.sessions.get_mut(key)
    }

    fn insert(
        &mut self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: SessionData,
    ) {
        if !record.is_anonymous() {
            self.by_user
                .entry(record.user_id().to_owned())
                .or_default()
                .insert(key.clone());
        }
        let stored = StoredSession {
            record: record.clone(),
            expires_at,
        };
        self.sessions.insert(key.clone(), Entry { stored, data });
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Entry> {
        let entry = self.sessions.remove(key)?;
        let user_id = entry.stored.record.user_id();
        if let Some(keys) = self.by_user.get_mut(user_id) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(user_id);
            }
        }
        Some(entry)
    }

    fn sweep(&mut self, now: SystemTime) {
        let expired: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.stored.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
        self.counters.retain(|_, (_, expires_at)| *expires_at > now);
        self.credentials
            .retain(|_, (_, kept_until)| *kept_until > now);
        self.links.retain(|_, link| link.expires_at() > now);
        self.claims.retain(|_, until| *until > now);
        self.creations_since_sweep = 0;
    }
}

impl SessionStore for MemoryStore {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
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
        inner.insert(key, record, expires_at, data.clone());
        Ok(true)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        let mut inner = self.lock();
        Ok(inner
            .live(key, SystemTime::now())
            .map(|entry| entry.stored.clone()))
    }

    async fn load_with_data(&self, key: &SessionKey) -> Result<Option<LoadedSession>, StoreError> {
        let mut inner = self.lock();
        // Whatever its size: a clone shares the values instead of copying them.
        Ok(inner
            .live(key, SystemTime::now())
            .map(|entry| LoadedSession {
                stored: entry.stored.clone(),
                data: Some(entry.data.clone()),
            }))
    }

    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.live(key, SystemTime::now()) {
            Some(entry) => {
                entry.stored.expires_at = expires_at;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn load_data(&self, key: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        let mut inner = self.lock();
        Ok(inner
            .live(key, SystemTime::now())
            .map(|entry| entry.data.clone()))
    }

    async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> Result<DataWrite, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.live(key, SystemTime::now()) else {
            return Ok(DataWrite::Gone);
        };
        let mut data = entry.data.clone();
        let previous = data.apply(changes);
        let size = data.size();
        if size > max_size && size > entry.data.size() {
            return Ok(DataWrite::TooLarge { size });
        }
        entry.data = data;
        Ok(DataWrite::Written(previous))
    }

    async fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.live(key, SystemTime::now()) else {
            return Ok(false);
        };
        let record = entry.stored.record.clone();
        entry.stored.record = record.with_user(user.to_owned(), roles.to_vec());
        Ok(true)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let was_live = inner.live(key, now).is_some();
        inner.remove(key);
        Ok(was_live)
    }

    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let keys: Vec<SessionKey> = inner
            .by_user
            .get(user_id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        let mut listing = UserSessions::default();
        for key in keys {
            match inner.live(&key, now) {
                Some(entry) => listing.live.push((key, entry.stored.clone())),
                None => listing.dropped += 1,
            }
        }
        Ok(listing)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        // One lock makes the whole move atomic, which satisfies the ordering rule trivially,
        // and no write can land on the old session once its data is copied.
        if inner.live(old, now).is_none() || inner.live(new, now).is_some() {
            return Ok(false);
        }
        let Some(Entry { stored, data }) = inner.remove(old) else {
            return Ok(false);
        };
        let record = match carry {
            Carry::Data => record.clone(),
            Carry::DataAndUser => record.clone().with_user(
                stored.record.user().to_owned(),
                stored.record.roles().to_vec(),
            ),
        };
        inner.insert(new, &record, expires_at, data);
        Ok(true)
    }

    async fn admit_anonymous(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        ThrottleStore::admit(self, counters).await
    }

    async fn credentials_version(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let now = SystemTime::now();
        let inner = self.lock();
        Ok(inner
            .credentials
            .get(user_id)
            .filter(|(_, kept_until)| *kept_until > now)
            .map(|(version, _)| version.clone()))
    }

    async fn set_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let kept_until = SystemTime::now() + keep_for;
        self.lock()
            .credentials
            .insert(user_id.to_owned(), (version.to_owned(), kept_until));
        Ok(())
    }

    async fn create_link(&self, key: &LinkKey, record: &LinkRecord) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        inner.creations_since_sweep += 1;
        if inner.creations_since_sweep >= SWEEP_EVERY {
            inner.sweep(now);
        }
        if inner
            .links
            .get(key)
            .is_some_and(|link| link.expires_at() > now)
        {
            return Ok(false);
        }
        inner.links.insert(key.clone(), record.clone());
        Ok(true)
    }

    async fn load_link(&self, key: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        let now = SystemTime::now();
        Ok(self
            .lock()
            .links
            .get(key)
            .filter(|link| link.expires_at() > now)
            .cloned())
    }

    async fn take_link(&self, key: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        let now = SystemTime::now();
        // Removed under the lock: of two racing takes, the second finds nothing.
        Ok(self
            .lock()
            .links
            .remove(key)
            .filter(|link| link.expires_at() > now))
    }

    async fn claim_once(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        inner.creations_since_sweep += 1;
        if inner.creations_since_sweep >= SWEEP_EVERY {
            inner.sweep(now);
        }
        // Checked and written under one lock: of two racing claims, the second sees the first.
        if inner.claims.get(name).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        inner.claims.insert(name.to_owned(), now + ttl);
        Ok(true)
    }
}

impl ThrottleStore for MemoryStore {
    async fn admit(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        inner.creations_since_sweep += 1;
        if inner.creations_since_sweep >= SWEEP_EVERY {
            inner.sweep(now);
        }
        let live = |entry: Option<&(i64, SystemTime)>| entry.copied().filter(|(_, end)| *end > now);
        let retry_after = counters
            .iter()
            .filter_map(|c| {
                // A counter not yet created holds zero, which a `max` of 0 already refuses,
                // with the whole window to wait, as Redis answers.
                let (count, end) = live(inner.counters.get(c.name)).unwrap_or((0, now + c.window));
                (count >= i64::from(c.max)).then(|| end.duration_since(now).unwrap_or_default())
            })
            .max();
        if let Some(retry_after) = retry_after {
            return Ok(Admission::Refused { retry_after });
        }
        for c in counters {
            let (count, end) = live(inner.counters.get(c.name)).unwrap_or((0, now + c.window));
            inner.counters.insert(c.name.to_owned(), (count + 1, end));
        }
        Ok(Admission::Admitted)
    }

    async fn admit_existing(&self, counter: Counter<'_>) -> Result<Option<Admission>, StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let Some((count, end)) = inner.counters.get_mut(counter.name) else {
            return Ok(None);
        };
        if *end <= now {
            return Ok(None);
        }
        if *count >= i64::from(counter.max) {
            let retry_after = end.duration_since(now).unwrap_or_default();
            return Ok(Some(Admission::Refused { retry_after }));
        }
        *count += 1;
        Ok(Some(Admission::Admitted))
    }

    async fn release(&self, counters: &[&str]) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        for name in counters {
            if let Some((count, end)) = inner.counters.get_mut(*name) {
                if *end > now && *count > 0 {
                    *count -= 1;
                }
            }
        }
        Ok(())
    }

    async fn reset(&self, counter: &str) -> Result<(), StoreError> {
        self.lock().counters.remove(counter);
        Ok(())
    }
}
