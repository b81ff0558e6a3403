//! A real store with faults injected around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Holds calls of one kind (`"delete"`, `"rotate"`, `"extend"`, or `"list"` between its index
/// read and its record reads) until the test lets them go: a race staged in a chosen order,
/// with no sleep that may or may not be long enough.
#[derive(Clone, Default)]
pub struct Gate {
    armed: Arc<Mutex<Option<Armed>>>,
}

struct Armed {
    op: &'static str,
    /// How many more calls to hold.
    left: usize,
    state: Arc<watch::Sender<Holding>>,
}

#[derive(Clone, Copy, Default)]
struct Holding {
    held: usize,
    released: bool,
}

/// Calls held at an armed [`Gate`]; dropping it lets them all go on and disarms the gate.
pub struct Held {
    gate: Gate,
    state: Arc<watch::Sender<Holding>>,
}

impl Held {
    /// Waits until `calls` calls are held (10 s at most, then panics: the race did not happen).
    pub async fn arrived(&self, calls: usize) {
        let mut seen = self.state.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|h| h.held >= calls)).await;
        let held = self.state.borrow().held;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "{held} of the {calls} store calls expected reached the gate"
        );
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.gate.armed.lock().unwrap() = None;
        self.state.send_modify(|h| h.released = true);
    }
}

impl Gate {
    /// Holds the next `calls` calls of `op` until the returned [`Held`] is dropped.
    pub fn arm(&self, op: &'static str, calls: usize) -> Held {
        let state = Arc::new(watch::Sender::new(Holding::default()));
        *self.armed.lock().unwrap() = Some(Armed {
            op,
            left: calls,
            state: Arc::clone(&state),
        });
        Held {
            gate: self.clone(),
            state,
        }
    }

    /// Waits here if the gate holds `op`; `true` if it did.
    async fn pass(&self, op: &str) -> bool {
        let state = {
            let mut armed = self.armed.lock().unwrap();
            match armed.as_mut() {
                Some(a) if a.op == op && a.left > 0 => {
                    a.left -= 1;
                    Some(Arc::clone(&a.state))
                }
                _ => None,
            }
        };
        let Some(state) = state else { return false };
        let mut seen = state.subscribe();
        state.send_modify(|h| h.held += 1);
        let _ = seen.wait_for(|h| h.released).await;
        true
    }
}

/// A real store with the faults a test needs injected around it.
#[derive(Clone, Default)]
pub struct Wrapped<S> {
    pub inner: S,
    /// Held before every `extend`, to widen the window between a load and its refresh.
    pub extend_delay: Duration,
    /// Held before every `delete`, to let a rotation slip between a revocation's list and delete.
    pub delete_delay: Duration,
    /// Held before every `rotate`, to let a revocation slip between a load and its rotation.
    pub rotate_delay: Duration,
    /// Time between reading the index and reading the records in `list`.
    pub list_gap: Duration,
    /// Keep records an hour whatever their deadline, as a careless custom store might, and
    /// report their deadlines as follows.
    pub keep_expired: bool,
    /// With `keep_expired`: report the real idle deadline (`true`) or one an hour away.
    pub report_idle_deadline: bool,
    pub extend_calls: std::sync::Arc<AtomicU32>,
    /// How many of the next loads fail as if Redis had gone away.
    pub failing_loads: std::sync::Arc<AtomicU32>,
    /// Holds one chosen call until the test lets it go.
    pub gate: Gate,
    deadlines: std::sync::Arc<std::sync::Mutex<HashMap<String, std::time::SystemTime>>>,
}

impl<S> Wrapped<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            extend_delay: Duration::ZERO,
            delete_delay: Duration::ZERO,
            rotate_delay: Duration::ZERO,
            list_gap: Duration::ZERO,
            keep_expired: false,
            report_idle_deadline: false,
            extend_calls: Default::default(),
            failing_loads: Default::default(),
            gate: Gate::default(),
            deadlines: Default::default(),
        }
    }

    fn stored_deadline(
        &self,
        key: &actix_login::store::SessionKey,
        real: std::time::SystemTime,
    ) -> std::time::SystemTime {
        if !self.keep_expired {
            return real;
        }
        self.deadlines
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), real);
        std::time::SystemTime::now() + Duration::from_secs(3600)
    }
}

impl<S: actix_login::store::SessionStore> actix_login::store::SessionStore for Wrapped<S> {
    async fn create(
        &self,
        key: &actix_login::store::SessionKey,
        record: &actix_login::store::SessionRecord,
        expires_at: std::time::SystemTime,
        data: &actix_login::SessionData,
    ) -> Result<bool, actix_login::StoreError> {
        let deadline = self.stored_deadline(key, expires_at);
        self.inner.create(key, record, deadline, data).await
    }

    async fn load(
        &self,
        key: &actix_login::store::SessionKey,
    ) -> Result<Option<actix_login::store::StoredSession>, actix_login::StoreError> {
        let failing = self
            .failing_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(actix_login::StoreError::Timeout);
        }
        let mut loaded = self.inner.load(key).await?;
        if let (Some(stored), true) = (loaded.as_mut(), self.report_idle_deadline) {
            if let Some(real) = self.deadlines.lock().unwrap().get(key.as_str()) {
                stored.expires_at = *real;
            }
        }
        Ok(loaded)
    }

    async fn extend(
        &self,
        key: &actix_login::store::SessionKey,
        expires_at: std::time::SystemTime,
    ) -> Result<bool, actix_login::StoreError> {
        self.extend_calls.fetch_add(1, Ordering::SeqCst);
        self.gate.pass("extend").await;
        tokio::time::sleep(self.extend_delay).await;
        let deadline = self.stored_deadline(key, expires_at);
        self.inner.extend(key, deadline).await
    }

    async fn load_data(
        &self,
        key: &actix_login::store::SessionKey,
    ) -> Result<Option<actix_login::SessionData>, actix_login::StoreError> {
        self.inner.load_data(key).await
    }

    async fn write_data(
        &self,
        key: &actix_login::store::SessionKey,
        changes: &[actix_login::store::DataChange],
        max_size: usize,
    ) -> Result<actix_login::store::DataWrite, actix_login::StoreError> {
        self.inner.write_data(key, changes, max_size).await
    }

    async fn update_user(
        &self,
        key: &actix_login::store::SessionKey,
        user: &serde_json::value::RawValue,
        roles: &[String],
    ) -> Result<bool, actix_login::StoreError> {
        self.inner.update_user(key, user, roles).await
    }

    async fn delete(
        &self,
        key: &actix_login::store::SessionKey,
    ) -> Result<bool, actix_login::StoreError> {
        self.gate.pass("delete").await;
        tokio::time::sleep(self.delete_delay).await;
        self.inner.delete(key).await
    }

    async fn list(
        &self,
        user_id: &str,
    ) -> Result<actix_login::store::UserSessions, actix_login::StoreError> {
        let mut listing = self.inner.list(user_id).await?;
        let held = self.gate.pass("list").await;
        if self.list_gap.is_zero() && !held {
            return Ok(listing);
        }
        // Emulate a listing whose index read and record reads are far apart: records that
        // vanish meanwhile count as dropped, entries added meanwhile are not seen.
        tokio::time::sleep(self.list_gap).await;
        let mut live = Vec::new();
        for (key, stored) in listing.live {
            match self.inner.load(&key).await? {
                Some(_) => live.push((key, stored)),
                None => listing.dropped += 1,
            }
        }
        listing.live = live;
        Ok(listing)
    }

    async fn rotate(
        &self,
        old: &actix_login::store::SessionKey,
        new: &actix_login::store::SessionKey,
        record: &actix_login::store::SessionRecord,
        expires_at: std::time::SystemTime,
        carry: actix_login::store::Carry,
    ) -> Result<bool, actix_login::StoreError> {
        self.gate.pass("rotate").await;
        tokio::time::sleep(self.rotate_delay).await;
        let deadline = self.stored_deadline(new, expires_at);
        self.inner.rotate(old, new, record, deadline, carry).await
    }

    async fn admit_anonymous(
        &self,
        counters: &[actix_login::store::Counter<'_>],
    ) -> Result<actix_login::store::Admission, actix_login::StoreError> {
        self.inner.admit_anonymous(counters).await
    }

    async fn credentials_version(
        &self,
        user_id: &str,
    ) -> Result<Option<String>, actix_login::StoreError> {
        self.inner.credentials_version(user_id).await
    }

    async fn set_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: std::time::Duration,
    ) -> Result<(), actix_login::StoreError> {
        self.inner
            .set_credentials_version(user_id, version, keep_for)
            .await
    }

    async fn create_link(
        &self,
        key: &actix_login::store::LinkKey,
        record: &actix_login::store::LinkRecord,
    ) -> Result<bool, actix_login::StoreError> {
        self.inner.create_link(key, record).await
    }

    async fn load_link(
        &self,
        key: &actix_login::store::LinkKey,
    ) -> Result<Option<actix_login::store::LinkRecord>, actix_login::StoreError> {
        self.inner.load_link(key).await
    }

    async fn take_link(
        &self,
        key: &actix_login::store::LinkKey,
    ) -> Result<Option<actix_login::store::LinkRecord>, actix_login::StoreError> {
        self.inner.take_link(key).await
    }

    async fn claim_once(
        &self,
        name: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, actix_login::StoreError> {
        self.inner.claim_once(name, ttl).await
    }
}
