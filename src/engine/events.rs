//! Security events: what happened to an account, as typed values an app subscribes to, and the
//! activity log each user can read.
//!
//! Subscribe with [`LoginMiddlewareBuilder::on_event`](crate::LoginMiddlewareBuilder::on_event).
//! Every [`SecurityEvent`] goes into a bounded queue that one thread of its own drains, calling
//! the handlers in turn: a request never waits for a handler, and never fails because of one.
//! When the queue is full (handlers slower than the events come), the event is dropped and
//! counted ([`LoginMiddleware::events_dropped`](crate::LoginMiddleware::events_dropped), and the
//! `actix_login_events_dropped_total` metric with the `metrics` feature).
//!
//! Events carry no secret: no token, no password, no session key; a session appears as its
//! public id, the one [`SessionInfo`](crate::SessionInfo) shows. Serialised (with `serde`),
//! an event reads `{"at":…,"user_id":…,"ip":…,"user_agent":…,"type":"login_succeeded",…}`.
//!
//! An audit trail, one JSON line per event:
//!
//! ```
//! use std::io::Write as _;
//! use std::sync::Mutex;
//!
//! use actix_login::events::{EventKind, SecurityEvent};
//! use actix_login::{LoginMiddleware, MemoryStore};
//!
//! let trail = Mutex::new(std::io::sink()); // a file, in a real app
//! let middleware = LoginMiddleware::builder(MemoryStore::new())
//!     .on_event(move |event: &SecurityEvent| {
//!         // Runs on the events thread: slow work here delays other events, never a request.
//!         if let Ok(line) = serde_json::to_string(event) {
//!             let mut trail = trail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
//!             let _ = writeln!(trail, "{line}");
//!         }
//!         if let EventKind::LoginSucceeded { new_device: true, .. } = event.kind {
//!             // mail the user: "New sign-in to your account"
//!         }
//!     })
//!     .build();
//! ```
//!
//! Besides the events, the engine writes an [`ActivityEntry`] to the user's activity log in the
//! store for what a user should see of their own account (logins, new devices, failed logins,
//! logouts, revocations, password changes, tokens, used links, wrong second-factor codes, a
//! second factor set up, new recovery codes, trusted browsers), readable with
//! [`Sessions::activity`](crate::Sessions::activity) and
//! [`Session::activity`](crate::Session::activity).
//!
//! # Metrics
//!
//! With the cargo feature `metrics`, the crate counts through the
//! [`metrics`](https://docs.rs/metrics) facade, for whichever recorder the app installs
//! (Prometheus, OpenTelemetry…); without a recorder, a count costs a few atomic loads.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `actix_login_logins_total` | counter | `result`: `success`, `failure`, `throttled` |
//! | `actix_login_logouts_total` | counter | |
//! | `actix_login_revocations_total` | counter | `by`: `user`, `app`, `session_cap`, `credentials_changed` |
//! | `actix_login_throttled_total` | counter | |
//! | `actix_login_store_errors_total` | counter | `op`: `redis` (any Redis command), `append_activity` |
//! | `actix_login_store_command_seconds` | histogram | |
//! | `actix_login_cache_hits_total`, `actix_login_cache_misses_total` | counter | |
//! | `actix_login_events_dropped_total` | counter | |
//! | `actix_login_second_factor_codes_total` | counter | `result`: `success` (a TOTP or recovery code accepted), `failure` (wrong, malformed or used), `throttled` (refused by the per-account limit) |
//! | `actix_login_second_factor_changes_total` | counter | `change`: `enrolled`, `recovery_codes_regenerated`, `browser_trusted` |
//! | `actix_login_links_issued_total`, `actix_login_links_used_total` | counter | `purpose`: `password_reset`, `verify_email`, `change_email`, `sign_in`, `end_session` |

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use super::{Grant, SessionEngine};
use crate::record::LinkPurpose;
use crate::record::SessionRecord;
pub use crate::record::{ActivityEntry, ActivityKind, LoginMethod};
use crate::telemetry;

/// One thing that happened to an account. See the [module](self).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SecurityEvent {
    /// When it happened, in Unix seconds when serialised.
    #[serde(serialize_with = "unix_seconds")]
    pub at: SystemTime,
    /// The account concerned: the user id the app logs users in with. `None` when no account
    /// is known (a throttled attempt on an unknown name).
    pub user_id: Option<String>,
    /// The client's address, as [`trust_proxies`](crate::LoginMiddlewareBuilder::trust_proxies)
    /// resolves it, when a request caused it.
    pub ip: Option<String>,
    /// The client's `User-Agent` (at most 256 bytes), when a request caused it.
    pub user_agent: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a [`SecurityEvent`] says happened. Serialised with a `"type"` in `snake_case`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A login created a session.
    LoginSucceeded {
        /// The new session's public id.
        session_id: String,
        /// How the user proved who they are.
        method: LoginMethod,
        /// Whether the browser brought no device cookie for the account (see
        /// [known browsers](crate::throttle::LoginThrottle#known-browsers)): `false` also when
        /// no [`LoginThrottle::attempt`](crate::throttle::LoginThrottle::attempt) checked the
        /// request.
        new_device: bool,
        /// Whether the login asked to be remembered.
        remembered: bool,
        /// Whether the client got a bearer token rather than a cookie.
        bearer: bool,
    },
    /// A login attempt with wrong credentials, reported with
    /// [`LoginAttempt::failed`](crate::throttle::LoginAttempt::failed).
    LoginFailed,
    /// A login attempt refused by the throttle before any password was checked.
    Throttled {
        /// How long the client was told to wait, in seconds.
        retry_after_secs: u64,
    },
    /// A session was ended by its own client. The event's address and user agent are those
    /// the session logged in with.
    LoggedOut {
        /// The session's public id.
        session_id: String,
    },
    /// One session was ended by someone other than its client.
    SessionRevoked {
        /// The session's public id.
        session_id: String,
        /// Who ended it.
        by: RevokedBy,
    },
    /// Every session of the account but the one that asked was ended.
    OtherSessionsRevoked {
        /// How many ended.
        count: usize,
    },
    /// Every session of the account was ended.
    AllSessionsRevoked {
        /// How many ended.
        count: usize,
        /// Who ended them.
        by: RevokedBy,
    },
    /// The account's password changed (or its credentials, as the app names them), which
    /// ended its other sessions.
    CredentialsChanged {
        /// How many sessions ended.
        sessions_revoked: usize,
    },
    /// A personal access token was created.
    TokenCreated {
        /// The token's public id.
        session_id: String,
        /// Its name.
        name: String,
    },
    /// A personal access token was revoked.
    TokenRevoked {
        /// The token's public id.
        session_id: String,
        /// Who revoked it.
        by: RevokedBy,
    },
    /// A one-time link was issued for the account (the secret is not in the event).
    LinkIssued {
        /// What the link is for.
        purpose: LinkPurpose,
    },
    /// A one-time link of the account was used.
    LinkUsed {
        /// What the link was for.
        purpose: LinkPurpose,
    },
    /// An admin started acting as the user (see
    /// [`Session::impersonate`](crate::Session::impersonate)). `user_id` is the user's; the
    /// admin's activity log gets the entry too.
    ImpersonationStarted {
        /// The impersonation session's public id.
        session_id: String,
        /// The admin's user id.
        by: String,
    },
    /// An admin stopped acting as the user.
    ImpersonationEnded {
        /// The impersonation session's public id.
        session_id: String,
        /// The admin's user id.
        by: String,
    },
    /// A second-factor code was accepted ([`TwoFactor::verify`](crate::two_factor::TwoFactor::verify)):
    /// a login completing, or a login proving it again for sudo mode. The login's own
    /// [`LoginSucceeded`](Self::LoginSucceeded) follows when it completes one.
    SecondFactorSucceeded {
        /// Whether it was a recovery code (the account has one fewer) rather than a TOTP code.
        recovery_code: bool,
    },
    /// A second-factor code was wrong, malformed or used already. The account's activity log
    /// shows it, as it shows failed logins.
    SecondFactorFailed,
    /// A second-factor code was refused before it was looked at: too many wrong codes for the
    /// account.
    SecondFactorThrottled {
        /// How long the client was told to wait, in seconds.
        retry_after_secs: u64,
    },
    /// The account's second factor was set up: the first code from a new TOTP secret was
    /// right ([`TwoFactor::confirm`](crate::two_factor::TwoFactor::confirm)).
    SecondFactorEnrolled,
    /// A new set of recovery codes replaced the old ones.
    RecoveryCodesRegenerated,
    /// A browser was trusted to skip the second factor
    /// ([`TwoFactor::trust_browser`](crate::two_factor::TwoFactor::trust_browser)).
    BrowserTrusted,
}

/// Who ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevokedBy {
    /// The user, from another of their sessions ([`Session`](crate::Session)), or with a
    /// "this wasn't me" link ([`OneTimeLinks::end_session`](crate::links::OneTimeLinks::end_session)).
    User,
    /// The app, through [`Sessions`](crate::Sessions) (an admin, a disabled account).
    App,
    /// A newer login of the user, past the
    /// [session cap](crate::LoginMiddlewareBuilder::max_sessions_per_user).
    SessionCap,
}

impl SecurityEvent {
    pub(crate) fn new(user_id: Option<&str>, kind: EventKind) -> Self {
        Self {
            at: SystemTime::now(),
            user_id: user_id.map(str::to_owned),
            ip: None,
            user_agent: None,
            kind,
        }
    }

    pub(crate) fn client(mut self, ip: Option<&str>, user_agent: Option<&str>) -> Self {
        self.ip = ip.map(str::to_owned);
        self.user_agent = user_agent.map(str::to_owned);
        self
    }

    /// The event of a login that created `record`.
    pub(crate) fn login(grant: &Grant, record: &SessionRecord) -> Self {
        let kind = EventKind::LoginSucceeded {
            session_id: record.id().to_owned(),
            method: grant.method,
            new_device: grant.new_device,
            remembered: record.is_remembered(),
            bearer: record.is_bearer(),
        };
        Self::new(Some(record.user_id()), kind).client(record.ip(), record.user_agent())
    }

    /// The event of a login that became one when its second factor was proven, `record` with
    /// the method its half-login kept; `new_device` is what the half-login noted.
    pub(crate) fn second_factor_login(record: &SessionRecord, new_device: bool) -> Self {
        let kind = EventKind::LoginSucceeded {
            session_id: record.id().to_owned(),
            method: record.method(),
            new_device,
            remembered: record.is_remembered(),
            bearer: record.is_bearer(),
        };
        Self::new(Some(record.user_id()), kind).client(record.ip(), record.user_agent())
    }

    /// The event of the session of `record` ending at its client's request.
    pub(crate) fn logout(record: &SessionRecord) -> Self {
        let kind = EventKind::LoggedOut {
            session_id: record.id().to_owned(),
        };
        Self::new(Some(record.user_id()), kind).client(record.ip(), record.user_agent())
    }

    /// The event of the session of `record` ended by `by`.
    pub(crate) fn revoked(record: &SessionRecord, by: RevokedBy) -> Self {
        let session_id = record.id().to_owned();
        let kind = if record.token_name().is_some() {
            EventKind::TokenRevoked { session_id, by }
        } else {
            EventKind::SessionRevoked { session_id, by }
        };
        Self::new(Some(record.user_id()), kind)
    }

    /// The event of the personal access token of `record` being created.
    pub(crate) fn token_created(record: &SessionRecord) -> Self {
        let kind = EventKind::TokenCreated {
            session_id: record.id().to_owned(),
            name: record.token_name().unwrap_or_default().to_owned(),
        };
        Self::new(Some(record.user_id()), kind).client(record.ip(), record.user_agent())
    }

    /// The entry a user sees in their activity log for this event, if any.
    fn activity(&self) -> Option<ActivityEntry> {
        let method = match &self.kind {
            EventKind::LoginSucceeded { method, .. } => Some(*method),
            _ => None,
        };
        let (kind, session_id) = match &self.kind {
            EventKind::LoginSucceeded {
                session_id,
                new_device,
                ..
            } => (
                if *new_device {
                    ActivityKind::NewDevice
                } else {
                    ActivityKind::Login
                },
                Some(session_id),
            ),
            EventKind::LoginFailed => (ActivityKind::LoginFailed, None),
            EventKind::SecondFactorFailed => (ActivityKind::SecondFactorFailed, None),
            EventKind::SecondFactorEnrolled => (ActivityKind::SecondFactorEnrolled, None),
            EventKind::RecoveryCodesRegenerated => (ActivityKind::RecoveryCodesRegenerated, None),
            EventKind::BrowserTrusted => (ActivityKind::BrowserTrusted, None),
            EventKind::LoggedOut { session_id } => (ActivityKind::Logout, Some(session_id)),
            EventKind::SessionRevoked { session_id, .. } => {
                (ActivityKind::SessionRevoked, Some(session_id))
            }
            EventKind::OtherSessionsRevoked { .. } => (ActivityKind::OtherSessionsRevoked, None),
            EventKind::AllSessionsRevoked { .. } => (ActivityKind::AllSessionsRevoked, None),
            EventKind::CredentialsChanged { .. } => (ActivityKind::PasswordChanged, None),
            EventKind::TokenCreated { session_id, .. } => {
                (ActivityKind::TokenCreated, Some(session_id))
            }
            EventKind::TokenRevoked { session_id, .. } => {
                (ActivityKind::TokenRevoked, Some(session_id))
            }
            EventKind::LinkUsed { .. } => (ActivityKind::LinkUsed, None),
            EventKind::ImpersonationStarted { session_id, .. } => {
                (ActivityKind::ImpersonationStarted, Some(session_id))
            }
            EventKind::ImpersonationEnded { session_id, .. } => {
                (ActivityKind::ImpersonationEnded, Some(session_id))
            }
            // Throttled attempts are not written: a flood of them must cost the store nothing.
            // An accepted code is followed by the login's entry, or is sudo mode confirmed.
            EventKind::Throttled { .. }
            | EventKind::SecondFactorThrottled { .. }
            | EventKind::SecondFactorSucceeded { .. }
            | EventKind::LinkIssued { .. } => return None,
        };
        Some(
            ActivityEntry::new(kind, self.at)
                .with_client(self.ip.clone(), self.user_agent.clone())
                .with_session(session_id.cloned())
                .with_method(method),
        )
    }
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
}

/// Counts `kind` in the metrics.
fn count(kind: &EventKind) {
    match kind {
        EventKind::LoginSucceeded { .. } => telemetry::login("success"),
        EventKind::LoginFailed => telemetry::login("failure"),
        EventKind::Throttled { .. } => telemetry::login("throttled"),
        EventKind::LoggedOut { .. } => telemetry::logout(),
        EventKind::SessionRevoked { by, .. } | EventKind::TokenRevoked { by, .. } => {
            telemetry::revocations(by.label(), 1);
        }
        EventKind::AllSessionsRevoked { count, by } => telemetry::revocations(by.label(), *count),
        EventKind::OtherSessionsRevoked { count } => {
            telemetry::revocations(RevokedBy::User.label(), *count);
        }
        EventKind::CredentialsChanged { sessions_revoked } => {
            telemetry::revocations("credentials_changed", *sessions_revoked);
        }
        EventKind::SecondFactorSucceeded { .. } => telemetry::second_factor_code("success"),
        EventKind::SecondFactorFailed => telemetry::second_factor_code("failure"),
        EventKind::SecondFactorThrottled { .. } => telemetry::second_factor_code("throttled"),
        EventKind::SecondFactorEnrolled => telemetry::second_factor_change("enrolled"),
        EventKind::RecoveryCodesRegenerated => {
            telemetry::second_factor_change("recovery_codes_regenerated");
        }
        EventKind::BrowserTrusted => telemetry::second_factor_change("browser_trusted"),
        EventKind::LinkIssued { purpose } => telemetry::link(purpose.tag(), false),
        EventKind::LinkUsed { purpose } => telemetry::link(purpose.tag(), true),
        EventKind::TokenCreated { .. }
        | EventKind::ImpersonationStarted { .. }
        | EventKind::ImpersonationEnded { .. } => {}
    }
}

impl RevokedBy {
    fn label(self) -> &'static str {
        match self {
            RevokedBy::User => "user",
            RevokedBy::App => "app",
            RevokedBy::SessionCap => "session_cap",
        }
    }
}

/// A subscriber, as the builder collects them.
pub(crate) type Handler = Box<dyn Fn(&SecurityEvent) + Send + 'static>;

/// Where the engine puts events: a bounded queue to the events thread, if anyone subscribed.
#[derive(Default)]
pub(crate) struct EventSink {
    queue: Option<SyncSender<SecurityEvent>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("subscribed", &self.queue.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl EventSink {
    /// A sink whose events `handlers` receive, in order, on a thread of its own, with room for
    /// `capacity` events waiting. No handlers, no thread.
    pub(crate) fn start(handlers: Vec<Handler>, capacity: usize) -> std::io::Result<Self> {
        if handlers.is_empty() {
            return Ok(Self::default());
        }
        let (queue, events) = sync_channel::<SecurityEvent>(capacity.max(1));
        std::thread::Builder::new()
            .name("actix-login-events".to_owned())
            .spawn(move || deliver_all(&events, &handlers))?;
        Ok(Self {
            queue: Some(queue),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues `event` for the handlers without waiting; counts it as dropped if the queue is
    /// full.
    pub(crate) fn send(&self, event: SecurityEvent) {
        count(&event.kind);
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                telemetry::event_dropped();
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How long the events thread sleeps between looks at the queue while events keep coming.
const BUSY_POLL: Duration = Duration::from_millis(1);
/// How many looks in a row that find nothing send the events thread back to waiting.
const IDLE_AFTER_EMPTY_POLLS: u32 = 100;

/// The events thread: delivers every event to `handlers`, in order, until the last sender is
/// dropped.
///
/// Idle, it waits on the queue, and the first event wakes it. While events keep coming it
/// sleeps between looks instead: a sender finds no thread waiting, so it queues its event
/// without a system call, and a busy app's requests never pay for waking this thread (that
/// wake-up made a login 1.37 times slower with a fast subscriber, `benches/slow_subscriber.rs`).
/// Delivery waits about [`BUSY_POLL`] for it (the sleep's own slack and the handlers' time
/// come on top); after [`IDLE_AFTER_EMPTY_POLLS`] empty looks
/// (a tenth of a second) the thread waits again.
fn deliver_all(events: &Receiver<SecurityEvent>, handlers: &[Handler]) {
    while let Ok(first) = events.recv() {
        deliver(&first, handlers);
        let mut empty_polls = 0;
        while empty_polls < IDLE_AFTER_EMPTY_POLLS {
            std::thread::sleep(BUSY_POLL);
            empty_polls += 1;
            loop {
                match events.try_recv() {
                    Ok(event) => {
                        deliver(&event, handlers);
                        empty_polls = 0;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
        }
    }
}

fn deliver(event: &SecurityEvent, handlers: &[Handler]) {
    for handler in handlers {
        // A panicking handler must not end delivery for the others.
        if std::panic::catch_unwind(AssertUnwindSafe(|| handler(event))).is_err() {
            tracing::error!("a security event handler panicked");
        }
    }
}

/// What [`LoginThrottle::attempt`](crate::throttle::LoginThrottle::attempt) found out about the
/// request's device cookie, left in the request for the login that follows.
#[derive(Clone, Debug)]
pub(crate) struct DeviceCheck {
    /// The account id the attempt named.
    pub(crate) account: String,
    /// Whether a valid device cookie for it came with the request.
    pub(crate) known: bool,
}

impl SessionEngine {
    /// Sends `event` to the subscribers, at once and without waiting.
    pub(crate) fn emit(&self, event: SecurityEvent) {
        self.events.send(event);
    }

    /// Writes the activity entry of `event`, if it has one and the log is on, to the log of
    /// its user. A failure is logged and counted, never returned: the log never fails what it
    /// records.
    pub(crate) async fn log_activity(&self, event: &SecurityEvent) {
        let (Some(limits), Some(user_id), Some(entry)) =
            (self.rules.activity_log(), &event.user_id, event.activity())
        else {
            return;
        };
        if let Err(err) = self.store.append_activity(user_id, &entry, limits).await {
            telemetry::store_error("append_activity");
            tracing::warn!(user_id, error = %err, "activity log entry not written");
        }
    }

    /// [`emit`](Self::emit) and [`log_activity`](Self::log_activity).
    pub(crate) async fn note(&self, event: SecurityEvent) {
        self.log_activity(&event).await;
        self.emit(event);
    }

    /// How many events were dropped because the queue was full.
    pub(crate) fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    /// Up to `limit` entries of the activity log of `user_id`, newest first, after `before`.
    pub(crate) async fn activity(
        &self,
        user_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityEntry>, crate::error::Error> {
        Ok(self
            .store
            .activity(user_id, before, limit.min(MAX_PAGE))
            .await?)
    }
}

/// The most entries one read returns.
const MAX_PAGE: usize = 100;
