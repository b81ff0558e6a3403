//! Where session records live.
//!
//! [`SessionStore`] is the whole contract between the middleware and a backend: operations on
//! one session (its record and its data), plus a per-user index to list and rotate sessions. The crate ships
//! `RedisStore` for production (with the `redis` feature, on by default) and [`MemoryStore`](crate::MemoryStore)
//! for development and tests; any other backend only has to implement the trait.
//!
//! Which cargo feature brings which store is in [the crate's feature table](crate#cargo-features).

use std::future::Future;
use std::time::{Duration, SystemTime};

use futures_util::future::LocalBoxFuture;

use serde_json::value::RawValue;

use crate::error::StoreError;

use crate::record::SessionData;

#[cfg(feature = "local-cache")]
mod cache;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod contract;
pub(crate) mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub(crate) mod redis;
#[cfg(feature = "redis")]
mod server_info;

#[cfg(feature = "actix-session")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-session")))]
pub use self::redis::{ActixSessionFailClosed, ActixSessionStore};
use crate::record::ActivityEntry;
pub use crate::record::{
    ActivityLimits, DataChange, LinkKey, LinkRecord, SessionKey, SessionRecord,
};

/// A record together with the moment it will expire unless it is extended.
#[derive(Clone, Debug)]
pub struct StoredSession {
    /// The record as it was created.
    pub record: SessionRecord,
    /// When the store will forget the record: the idle deadline, never later than
    /// [`SessionRecord::expires_at`].
    pub expires_at: SystemTime,
}

impl StoredSession {
    /// Whether neither deadline has passed at `now`.
    pub(crate) fn is_live(&self, now: SystemTime) -> bool {
        self.expires_at > now && self.record.expires_at() > now
    }
}

/// A session as [`SessionStore::load_with_data`] read it: its record and, when it came in the
/// same step, its data.
#[derive(Clone, Debug)]
pub struct LoadedSession {
    /// The record and its deadline.
    pub stored: StoredSession,
    /// The session's data, or `None` when the store did not bring it along (it was larger than
    /// the store reads unasked, or could not be read); [`load_data`](SessionStore::load_data)
    /// reads it then.
    pub data: Option<SessionData>,
}

/// What [`SessionStore::list`] found in a user's index.
#[derive(Clone, Debug, Default)]
pub struct UserSessions {
    /// The live sessions, in no particular order.
    pub live: Vec<(SessionKey, StoredSession)>,
    /// How many index entries had no live record of this user (expired, deleted, or rotated
    /// away while the listing ran) and were dropped.
    pub dropped: usize,
}

/// What [`SessionStore::write_data`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataWrite {
    /// Every change was made. Holds the value each change replaced or removed, in order
    /// (`None` for [`DataChange::Clear`] and for a name that had no value).
    Written(Vec<Option<String>>),
    /// Nothing was written: the data would have grown to `size` bytes, past the limit.
    TooLarge {
        /// The size the data would have had.
        size: usize,
    },
    /// Nothing was written: there is no session under the key, or it is moving to a new token.
    Gone,
}

/// What a [rotation](SessionStore::rotate) takes from the old session besides its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Only the data: the new record's profile and roles are the ones given (a login that keeps
    /// the visitor's cart).
    Data,
    /// The data, and the profile and roles the old session has *now*, which a
    /// [live update](SessionStore::update_user) may have changed since the caller loaded it (a
    /// token renewal).
    DataAndUser,
}

/// A backend that keeps session records, the app's data in each session, and an index of the
/// records per user.
///
/// No method may bring back a record that is gone: a logout or revocation that deletes a record
/// must win over any concurrent [`extend`](SessionStore::extend) or
/// [`rotate`](SessionStore::rotate). That is what makes logout immediate.
///
/// Revocation relies on one ordering rule, which needs no transaction spanning several keys: a
/// record is in its user's index *before* it can be used (before [`create`](SessionStore::create)
/// or [`rotate`](SessionStore::rotate) returns, since only then does anyone learn its token),
/// and `rotate` indexes the new record before it deletes the old one. A listing must never drop
/// the index entry of a record that exists: write the record first and index it second, or
/// both at once. Whoever deletes the old record first
/// wins: if the revoker did, the rotation fails and removes its new record; if the rotation did,
/// the revoker's delete finds nothing, or its listing finds the old record gone (`dropped`), so
/// it lists the index again and finds the new record. Revocation stops only at a listing that
/// finds nothing to revoke and nothing dropped.
///
/// Futures need not be `Send`: Actix runs each request on one worker thread. The store itself is
/// shared by all workers, hence `Send + Sync`.
///
/// # Implementing
///
/// Stores may return records past `expires_at` (the middleware checks the time itself), but
/// should free them eventually. Times are absolute; a store that works with relative TTLs, as
/// Redis does, converts with its own clock at the moment of the call.
///
/// A session's data lives and dies with its record: it expires with it, is deleted with it, and
/// moves with it on [`rotate`](SessionStore::rotate). The record's deadline, its profile and
/// roles, and each data value change independently, so no write to one may revert a concurrent
/// write to another: a refresh of the deadline must not rewrite the data, nor a data write the
/// deadline.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores `record`, holding `data`, under `key` until `expires_at`, unless the key is taken,
    /// and, unless the record is [anonymous](SessionRecord::is_anonymous), adds it to the index
    /// of `record.user_id()` before returning.
    ///
    /// Returns `Ok(false)` if a record already exists under `key`; it is left untouched. The
    /// index must outlive every record in it (keep it at least until the latest
    /// [`SessionRecord::expires_at`]).
    fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Fetches the record under `key`, or `None` if there is none (never created, deleted, or
    /// expired).
    fn load(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<StoredSession>, StoreError>>;

    /// [`load`](SessionStore::load), and in the same step the session's data, unless the store
    /// judges it too large to read on a request that may not look at it. For requests whose
    /// handler can read data: one read instead of a [`load`](SessionStore::load) and a
    /// [`load_data`](SessionStore::load_data).
    ///
    /// The data must be as of the same moment as the record: no write may fall between the two
    /// reads. The default reads the record alone (`data: None`), which is always correct.
    fn load_with_data(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<LoadedSession>, StoreError>> {
        async move {
            Ok(self
                .load(key)
                .await?
                .map(|stored| LoadedSession { stored, data: None }))
        }
    }

    /// Moves the expiry of an existing record, and its data, to `expires_at`, changing nothing
    /// else.
    ///
    /// Returns `Ok(false)`, and creates nothing, if there is no record under `key`.
    fn extend(
        &self,
        key: &SessionKey,
        expires_at: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// The data of the session under `key`, or `None` if there is no session.
    fn load_data(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<SessionData>, StoreError>>;

    /// Applies `changes`, in order and all at once, to the data of the session under `key`.
    ///
    /// Writes nothing and answers [`DataWrite::Gone`] when there is no session under `key` or
    /// it is being [rotated](SessionStore::rotate) away (a write must never bring a session
    /// back, nor land on a key whose data has already been copied); and
    /// [`DataWrite::TooLarge`] when the data would grow past `max_size` bytes (as
    /// [`SessionData::size`] counts them). A write that does not make the data grow always
    /// fits. Changes to different names by concurrent writes must all survive.
    fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> impl Future<Output = Result<DataWrite, StoreError>>;

    /// Replaces the profile and roles of the session under `key`, leaving everything else as
    /// it is. If the session is being rotated, the session it moves to must be updated too
    /// (the rotation copies the old one's profile with [`Carry::DataAndUser`]): when this
    /// returns, no token of the session shows the old profile. Returns `Ok(false)` if there is
    /// no session under `key`.
    fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Removes the record under `key`. Returns whether there was one. Its index entry may be
    /// left for [`list`](SessionStore::list) to prune.
    fn delete(&self, key: &SessionKey) -> impl Future<Output = Result<bool, StoreError>>;

    /// The live sessions of `user_id`, each once, also while one is being
    /// [rotated](SessionStore::rotate). Entries whose record is gone, expired, unreadable, or
    /// belongs to another user are dropped from the index on the way, and counted (except the
    /// old key of a rotation under way whose new key is listed: the rotation removes it).
    fn list(&self, user_id: &str) -> impl Future<Output = Result<UserSessions, StoreError>>;

    /// Moves the session under `old` to `new`, now holding `record`, expiring at `expires_at`,
    /// with the old session's data and, as `carry` says, its current profile and roles.
    /// `new` is in the same [group](SessionKey::group) as `old`.
    ///
    /// A rotation cut off at any point (a dropped request, a lost connection) must leave the
    /// old token either fully working or dead, never half: best, the whole move is one atomic
    /// step (copy `old`'s data and profile into `new`, create and index `new`, delete and
    /// unindex `old`), as [`MemoryStore`](crate::MemoryStore) and one Redis server do. A store
    /// that cannot do it in one step (a Redis Cluster, whose index lives on another node) must,
    /// in this order: atomically copy into `new` and mark `old` as moving, after which `old` is
    /// dead to [`load`](SessionStore::load) and no [`write_data`] lands on it; index `new`;
    /// delete `old`; if `old` was already gone, delete `new` and return `Ok(false)`; otherwise
    /// drop `old` from the index and return `Ok(true)`. A marked `old` must still be found by
    /// [`list`](SessionStore::list), so that a revocation racing the move deletes it and the
    /// move then gives up. Returns `Ok(false)` at once, creating nothing, if `old` is gone or
    /// already moving (a concurrent rotation won).
    ///
    /// [`write_data`]: SessionStore::write_data
    fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Counts the start of an [anonymous](SessionRecord::is_anonymous) session against
    /// `counters`, as [`ThrottleStore::admit`] counts login attempts: the bound that keeps
    /// visitors (or bots) without a login from filling the store.
    ///
    /// The default answers with an error, so a store that keeps no counters refuses anonymous
    /// sessions (logins still work).
    fn admit_anonymous(
        &self,
        counters: &[Counter<'_>],
    ) -> impl Future<Output = Result<Admission, StoreError>> {
        let _ = counters;
        std::future::ready(Err(StoreError::unavailable(
            "this session store keeps no counters for anonymous sessions",
        )))
    }

    /// The credentials version of `user_id` last stored with
    /// [`set_credentials_version`](SessionStore::set_credentials_version), or `None` if there
    /// is none (never set, or no longer kept).
    ///
    /// Logins that name the credentials they verified
    /// ([`Login::credentials_version`](crate::Login::credentials_version)) read it after their
    /// session is created and indexed. The default answers with an error, so such logins fail
    /// closed on a store that keeps no versions.
    fn credentials_version(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> {
        let _ = user_id;
        std::future::ready(Err(StoreError::unavailable(
            "this session store keeps no credentials versions",
        )))
    }

    /// Stores `version` as the current credentials version of `user_id`, replacing any other,
    /// for `keep_for` at least. It must be readable by every later
    /// [`credentials_version`](SessionStore::credentials_version) before this returns.
    ///
    /// The default answers with an error.
    fn set_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> {
        let _ = (user_id, version, keep_for);
        std::future::ready(Err(StoreError::unavailable(
            "this session store keeps no credentials versions",
        )))
    }
    /// Stores the one-time link `record` under `key` until its
    /// [`expires_at`](LinkRecord::expires_at), unless the key is taken. Returns `Ok(false)`, and
    /// leaves the link there untouched, if it is.
    ///
    /// The default answers with an error, like the other one-time link methods: a store that
    /// keeps no links makes issuing and using them fail with `503`, and nothing else changes.
    /// [`store::contract::check_one_time_links`](crate::store::contract::check_one_time_links)
    /// checks a store that does keep them.
    fn create_link(
        &self,
        key: &LinkKey,
        record: &LinkRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> {
        let _ = (key, record);
        std::future::ready(Err(StoreError::unavailable(NO_LINKS)))
    }

    /// The link under `key`, if there is one, leaving it in place (a mail scanner that opens a
    /// link must not use it up). May return a link past its `expires_at`; the caller checks.
    ///
    /// The default answers with an error.
    fn load_link(
        &self,
        key: &LinkKey,
    ) -> impl Future<Output = Result<Option<LinkRecord>, StoreError>> {
        let _ = key;
        std::future::ready(Err(StoreError::unavailable(NO_LINKS)))
    }

    /// Removes the link under `key` and returns it, in one atomic step: of any number of
    /// concurrent calls for one key, at most one gets the link, on every app instance sharing
    /// the store. This is what makes a link single-use. May return a link past its
    /// `expires_at`; the caller checks.
    ///
    /// The default answers with an error.
    fn take_link(
        &self,
        key: &LinkKey,
    ) -> impl Future<Output = Result<Option<LinkRecord>, StoreError>> {
        let _ = key;
        std::future::ready(Err(StoreError::unavailable(NO_LINKS)))
    }

    /// Adds `entry` to the activity log of `user_id`, newest last, keeping at most
    /// `limits.max_entries` entries (the oldest go first) and the whole log for
    /// `limits.keep_for` after this entry. The store gives the entry its id: one that
    /// [`activity`](SessionStore::activity) can page from.
    ///
    /// The default answers with an error: the engine then logs it and goes on (an activity log
    /// never fails a login), or the app turns the log off with
    /// [`activity_log`](crate::LoginMiddlewareBuilder::activity_log).
    /// [`store::contract::check_activity_log`](crate::store::contract::check_activity_log)
    /// checks a store that keeps one.
    fn append_activity(
        &self,
        user_id: &str,
        entry: &ActivityEntry,
        limits: ActivityLimits,
    ) -> impl Future<Output = Result<(), StoreError>> {
        let _ = (user_id, entry, limits);
        std::future::ready(Err(StoreError::unavailable(NO_ACTIVITY)))
    }

    /// Up to `limit` entries of the activity log of `user_id`, newest first, starting after
    /// the entry with id `before` (exclusive) or, without it, at the newest. An empty list
    /// when there are none (or no more).
    ///
    /// The default answers with an error.
    fn activity(
        &self,
        user_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivityEntry>, StoreError>> {
        let _ = (user_id, before, limit);
        std::future::ready(Err(StoreError::unavailable(NO_ACTIVITY)))
    }

    /// Records `name` as used for `ttl`, unless it already is: `Ok(true)` for the call that
    /// recorded it, `Ok(false)` while the record stands. Of any number of concurrent calls for
    /// one name, on every app instance sharing the store, exactly one gets `true`. This is what
    /// makes a second-factor code single-use (a TOTP code's time step, a recovery code), so a
    /// record must outlive `ttl` by no less than the store's clock allows and must never be
    /// lost while it stands (a store with replicas waits for one, as for a deleted session).
    ///
    /// `name` is made by the crate from hashes: short, printable ASCII, holding no secret.
    ///
    /// The default answers with an error, like the one-time link methods: a store that keeps
    /// no such records makes every second-factor code fail with `503`, and nothing else
    /// changes. [`store::contract::check_claims`](crate::store::contract::check_claims)
    /// checks a store that keeps them.
    fn claim_once(
        &self,
        name: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> {
        let _ = (name, ttl);
        std::future::ready(Err(StoreError::unavailable(
            "this session store keeps no single-use claims",
        )))
    }
}

/// What a store without an activity log answers.
const NO_ACTIVITY: &str = "this session store keeps no activity log";

/// What a store without one-time links answers.
const NO_LINKS: &str = "this session store keeps no one-time links";

/// One counter a login attempt is charged to, with its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter<'a> {
    /// The counter's name, unique per dimension (address, account, ...).
    pub name: &'a str,
    /// Attempts allowed within the window.
    pub max: u32,
    /// How long a count lasts from its first attempt.
    pub window: Duration,
}

/// What [`ThrottleStore::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Every counter had room; each now counts the attempt.
    Admitted,
    /// A counter is full; nothing was counted.
    Refused {
        /// When the fullest window ends.
        retry_after: Duration,
    },
}

/// A backend that keeps expiring counters, for [`LoginThrottle`](crate::throttle::LoginThrottle).
///
/// Counters live in the same place as the sessions, so every app instance sees the same counts.
/// Each operation must be atomic across the counters it is given, so that concurrent attempts
/// can never all see room that only one of them has.
pub trait ThrottleStore: Send + Sync + 'static {
    /// If any counter has reached its `max`, changes nothing and returns
    /// [`Admission::Refused`] with the longest remaining window among the full ones; otherwise
    /// adds one to every counter and returns [`Admission::Admitted`]. A counter that has no
    /// expiry yet gets its `window`; an existing expiry is left alone, so attempts never prolong
    /// a window.
    fn admit(
        &self,
        counters: &[Counter<'_>],
    ) -> impl Future<Output = Result<Admission, StoreError>>;

    /// [`admit`](ThrottleStore::admit) for one counter that must already exist: `None`, changing
    /// nothing, when there is no such counter or its window has ended; otherwise what `admit`
    /// answers for it alone.
    ///
    /// This is how a counter doubles as a record that something is valid until its window
    /// ends, as the throttle's device tokens are: an unknown name must never come into being
    /// by being tried.
    fn admit_existing(
        &self,
        counter: Counter<'_>,
    ) -> impl Future<Output = Result<Option<Admission>, StoreError>>;

    /// Takes one back from each named counter that is above zero. Never creates a counter and
    /// never goes below zero, so a release that arrives after its window ended changes nothing.
    fn release(&self, counters: &[&str]) -> impl Future<Output = Result<(), StoreError>>;

    /// Removes a counter.
    fn reset(&self, counter: &str) -> impl Future<Output = Result<(), StoreError>>;
}

/// [`ThrottleStore`] behind a vtable.
#[cfg(feature = "throttle")]
pub(crate) trait DynThrottleStore: Send + Sync {
    fn admit<'a>(
        &'a self,
        counters: &'a [Counter<'a>],
    ) -> LocalBoxFuture<'a, Result<Admission, StoreError>>;

    fn admit_existing<'a>(
        &'a self,
        counter: Counter<'a>,
    ) -> LocalBoxFuture<'a, Result<Option<Admission>, StoreError>>;

    fn release<'a>(&'a self, counters: &'a [&'a str])
        -> LocalBoxFuture<'a, Result<(), StoreError>>;

    fn reset<'a>(&'a self, counter: &'a str) -> LocalBoxFuture<'a, Result<(), StoreError>>;
}

#[cfg(feature = "throttle")]
impl<T: ThrottleStore> DynThrottleStore for T {
    fn admit<'a>(
        &'a self,
        counters: &'a [Counter<'a>],
    ) -> LocalBoxFuture<'a, Result<Admission, StoreError>> {
        Box::pin(ThrottleStore::admit(self, counters))
    }

    fn admit_existing<'a>(
        &'a self,
        counter: Counter<'a>,
    ) -> LocalBoxFuture<'a, Result<Option<Admission>, StoreError>> {
        Box::pin(ThrottleStore::admit_existing(self, counter))
    }

    fn release<'a>(
        &'a self,
        counters: &'a [&'a str],
    ) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        Box::pin(ThrottleStore::release(self, counters))
    }

    fn reset<'a>(&'a self, counter: &'a str) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        Box::pin(ThrottleStore::reset(self, counter))
    }
}

/// [`SessionStore`] behind a vtable, so the middleware and extractors need no type parameter.
pub(crate) trait DynStore: Send + Sync {
    fn create<'a>(
        &'a self,
        key: &'a SessionKey,
        record: &'a SessionRecord,
        expires_at: SystemTime,
        data: &'a SessionData,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn load<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<StoredSession>, StoreError>>;

    fn load_with_data<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<LoadedSession>, StoreError>>;

    /// The session under `key`, with its data when small, from the store's memory and without
    /// I/O, when the store can vouch that it is current: only a `RedisStore` with a local cache
    /// can. `None` says nothing about the session: [`load`](Self::load) tells.
    fn cached(&self, key: &SessionKey) -> Option<LoadedSession>;

    fn extend<'a>(
        &'a self,
        key: &'a SessionKey,
        expires_at: SystemTime,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn load_data<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<SessionData>, StoreError>>;

    fn write_data<'a>(
        &'a self,
        key: &'a SessionKey,
        changes: &'a [DataChange],
        max_size: usize,
    ) -> LocalBoxFuture<'a, Result<DataWrite, StoreError>>;

    fn update_user<'a>(
        &'a self,
        key: &'a SessionKey,
        user: &'a RawValue,
        roles: &'a [String],
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn delete<'a>(&'a self, key: &'a SessionKey) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn list<'a>(&'a self, user_id: &'a str)
        -> LocalBoxFuture<'a, Result<UserSessions, StoreError>>;

    fn rotate<'a>(
        &'a self,
        old: &'a SessionKey,
        new: &'a SessionKey,
        record: &'a SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn admit_anonymous<'a>(
        &'a self,
        counters: &'a [Counter<'a>],
    ) -> LocalBoxFuture<'a, Result<Admission, StoreError>>;

    fn credentials_version<'a>(
        &'a self,
        user_id: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<String>, StoreError>>;

    fn set_credentials_version<'a>(
        &'a self,
        user_id: &'a str,
        version: &'a str,
        keep_for: Duration,
    ) -> LocalBoxFuture<'a, Result<(), StoreError>>;

    fn create_link<'a>(
        &'a self,
        key: &'a LinkKey,
        record: &'a LinkRecord,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    fn load_link<'a>(
        &'a self,
        key: &'a LinkKey,
    ) -> LocalBoxFuture<'a, Result<Option<LinkRecord>, StoreError>>;

    fn take_link<'a>(
        &'a self,
        key: &'a LinkKey,
    ) -> LocalBoxFuture<'a, Result<Option<LinkRecord>, StoreError>>;

    fn append_activity<'a>(
        &'a self,
        user_id: &'a str,
        entry: &'a ActivityEntry,
        limits: ActivityLimits,
    ) -> LocalBoxFuture<'a, Result<(), StoreError>>;

    fn activity<'a>(
        &'a self,
        user_id: &'a str,
        before: Option<&'a str>,
        limit: usize,
    ) -> LocalBoxFuture<'a, Result<Vec<ActivityEntry>, StoreError>>;
    fn claim_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;
}

impl<S: SessionStore> DynStore for S {
    fn create<'a>(
        &'a self,
        key: &'a SessionKey,
        record: &'a SessionRecord,
        expires_at: SystemTime,
        data: &'a SessionData,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::create(self, key, record, expires_at, data))
    }

    fn load<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        Box::pin(SessionStore::load(self, key))
    }

    fn load_with_data<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<LoadedSession>, StoreError>> {
        Box::pin(SessionStore::load_with_data(self, key))
    }

    fn cached(&self, key: &SessionKey) -> Option<LoadedSession> {
        // Not a method of `SessionStore`: whether a copy in memory is current is the store's
        // own business, and only the cache of `RedisStore` can tell. The type test compares two
        // constants for a given `S`, which the optimiser folds away.
        #[cfg(feature = "local-cache")]
        if let Some(store) = (self as &dyn std::any::Any).downcast_ref::<self::redis::RedisStore>()
        {
            return store.cached(key);
        }
        let _ = key;
        None
    }

    fn extend<'a>(
        &'a self,
        key: &'a SessionKey,
        expires_at: SystemTime,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::extend(self, key, expires_at))
    }

    fn load_data<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> LocalBoxFuture<'a, Result<Option<SessionData>, StoreError>> {
        Box::pin(SessionStore::load_data(self, key))
    }

    fn write_data<'a>(
        &'a self,
        key: &'a SessionKey,
        changes: &'a [DataChange],
        max_size: usize,
    ) -> LocalBoxFuture<'a, Result<DataWrite, StoreError>> {
        Box::pin(SessionStore::write_data(self, key, changes, max_size))
    }

    fn update_user<'a>(
        &'a self,
        key: &'a SessionKey,
        user: &'a RawValue,
        roles: &'a [String],
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::update_user(self, key, user, roles))
    }

    fn delete<'a>(&'a self, key: &'a SessionKey) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::delete(self, key))
    }

    fn list<'a>(
        &'a self,
        user_id: &'a str,
    ) -> LocalBoxFuture<'a, Result<UserSessions, StoreError>> {
        Box::pin(SessionStore::list(self, user_id))
    }

    fn rotate<'a>(
        &'a self,
        old: &'a SessionKey,
        new: &'a SessionKey,
        record: &'a SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::rotate(
            self, old, new, record, expires_at, carry,
        ))
    }

    fn admit_anonymous<'a>(
        &'a self,
        counters: &'a [Counter<'a>],
    ) -> LocalBoxFuture<'a, Result<Admission, StoreError>> {
        Box::pin(SessionStore::admit_anonymous(self, counters))
    }

    fn credentials_version<'a>(
        &'a self,
        user_id: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(SessionStore::credentials_version(self, user_id))
    }

    fn set_credentials_version<'a>(
        &'a self,
        user_id: &'a str,
        version: &'a str,
        keep_for: Duration,
    ) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::set_credentials_version(
            self, user_id, version, keep_for,
        ))
    }

    fn create_link<'a>(
        &'a self,
        key: &'a LinkKey,
        record: &'a LinkRecord,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::create_link(self, key, record))
    }

    fn load_link<'a>(
        &'a self,
        key: &'a LinkKey,
    ) -> LocalBoxFuture<'a, Result<Option<LinkRecord>, StoreError>> {
        Box::pin(SessionStore::load_link(self, key))
    }

    fn take_link<'a>(
        &'a self,
        key: &'a LinkKey,
    ) -> LocalBoxFuture<'a, Result<Option<LinkRecord>, StoreError>> {
        Box::pin(SessionStore::take_link(self, key))
    }

    fn append_activity<'a>(
        &'a self,
        user_id: &'a str,
        entry: &'a ActivityEntry,
        limits: ActivityLimits,
    ) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::append_activity(self, user_id, entry, limits))
    }

    fn activity<'a>(
        &'a self,
        user_id: &'a str,
        before: Option<&'a str>,
        limit: usize,
    ) -> LocalBoxFuture<'a, Result<Vec<ActivityEntry>, StoreError>> {
        Box::pin(SessionStore::activity(self, user_id, before, limit))
    }

    fn claim_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::claim_once(self, name, ttl))
    }
}
