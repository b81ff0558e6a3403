//! Password hashing and verification with argon2id.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) with a 16-byte salt
//! from the operating system's CSPRNG, using the OWASP Password Storage Cheat Sheet's baseline
//! parameters: 19 MiB of memory, 2 passes, 1 lane. Passwords are NFKC-normalised first, so the
//! same password typed on different keyboards (composed or decomposed accents) verifies alike,
//! and refused above [`MAX_PASSWORD_BYTES`] before any work, so a huge input costs nothing.
//!
//! The free functions use these defaults; a [`PasswordHasher`] adds a pepper (a secret kept
//! outside the user database) and its rotation. After a successful login, [`needs_rehash`]
//! tells whether the stored hash predates the current parameters or pepper, so the app can
//! store a fresh one.
//!
//! Each hash takes tens of milliseconds of CPU and 19 MiB of memory, so [`hash`] and [`verify`]
//! run on threads of their own, never on the threads that serve requests, and at most half the
//! machine's cores hash at once. On Linux those threads run at a lower CPU priority (nice 10),
//! so the scheduler gives a core to a request the moment one arrives, and hashing takes what is
//! left, but never less than about a tenth of a busy core: logins slow down under load instead
//! of stopping. A burst of logins therefore cannot stall other requests or exhaust memory.
//!
//! # The hashing queue
//!
//! A hash that finds every hashing thread busy waits in one of two [lanes](Lane), so that
//! strangers cannot queue a returning user's login:
//!
//! * [`Lane::KnownDevice`]: logins from a browser that holds a valid device cookie for the
//!   account (see [`LoginAttempt::lane`](crate::throttle::LoginAttempt::lane)). They take the next free
//!   thread before any stranger, and are never refused. Each account has at most one check
//!   waiting or running here at a time; another one for the same account at once waits among
//!   strangers, so the owner of an account (and of as many device cookies as logins hand out)
//!   cannot take the lane over and shut strangers out.
//! * [`Lane::Stranger`]: everyone else, first come, first served. At most
//!   [`max_waiting`](PasswordHasher::max_waiting) verifications wait here (default
//!   [`DEFAULT_MAX_WAITING`], per process); one more is refused at once with
//!   [`PasswordError::Busy`], `503 {"error":"login_busy"}` with `Retry-After`, instead of
//!   waiting behind a flood. Hashes for storage ([`hash`], [`hash_registration`]) wait in this
//!   lane but are never refused: they follow a login or a throttled sign-up.
//!
//! A hash that finds a free thread starts at once whatever its lane, so a quiet server costs
//! exactly what it did without lanes.
//!
//! ```
//! # actix_web::rt::System::new().block_on(async {
//! use actix_login::password;
//!
//! let stored = password::hash("correct horse battery staple").await?;
//! assert!(password::verify("correct horse battery staple", Some(&stored)).await?);
//! assert!(!password::verify("wrong", Some(&stored)).await?);
//!
//! // No such user: the same work is done, and the answer is always `false`.
//! assert!(!password::verify("anything", None).await?);
//! # Ok::<(), password::PasswordError>(())
//! # }).unwrap();
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, KeyId, Params, ParamsBuilder, Version};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization as _;
use zeroize::Zeroizing;

/// The longest password accepted, in bytes. Longer input is refused before normalising or
/// hashing it: far beyond any passphrase, far below what could cost real CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Bytes of salt per hash.
const SALT_BYTES: usize = 16;

/// Bytes of argon2 output per hash.
const OUTPUT_BYTES: usize = 32;

/// The shortest pepper secret accepted.
const MIN_PEPPER_BYTES: usize = 16;

/// The hash of a random password nobody knows, made with the same parameters as [`hash`].
/// Verifying against it costs what verifying a real user's password costs, which is what keeps
/// "no such user" and "wrong password" apart only in the answer, not in the time taken.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$8s15I/DLCPSjiWE4h1rHkg$tcmYoyh73odbLl1b3ee5IGINVXbFq5tMotxab+f8n1U";

/// Why a password could not be hashed or checked.
///
/// As a response, [`TooLong`](PasswordError::TooLong) is the client's fault (`400`,
/// `{"error":"password_too_long"}`); every other variant is a server fault (`500`,
/// `{"error":"internal_error"}`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("password longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The stored hash is not a PHC string argon2 can read.
    #[error("stored password hash is malformed: {0}")]
    MalformedHash(argon2::password_hash::Error),
    /// The stored hash names a pepper this hasher does not have.
    #[error("stored password hash uses an unknown pepper")]
    UnknownPepper,
    /// A pepper's id is longer than 8 bytes, or empty.
    #[error("pepper ids must be 1 to 8 bytes")]
    InvalidPepperId,
    /// A pepper's secret is shorter than 16 bytes: likely a missing setting, not a secret.
    #[error("pepper secrets must be at least 16 bytes")]
    WeakPepper,
    /// argon2 failed to hash.
    #[error("password hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(getrandom::Error),
    /// Too many strangers' logins are already waiting for a hashing thread (see
    /// [the hashing queue](self#the-hashing-queue)); nothing was checked. As a response:
    /// `503 {"error":"login_busy"}` with `Retry-After`. Under a
    /// [`LoginThrottle`](crate::throttle::LoginThrottle), report it with
    /// [`LoginAttempt::not_checked`](crate::throttle::LoginAttempt::not_checked), so the attempt does
    /// not count as a failure.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    /// The hashing thread did not deliver a result (it could not be started, or the caller's
    /// runtime is shutting down).
    #[error("password task did not complete: {0}")]
    Interrupted(String),
}

/// A secret mixed into every hash (argon2's `secret` input), kept outside the user database, so
/// a stolen database alone cannot be cracked. Its id is written into each hash (`keyid=`), so
/// peppers can be rotated: keep the old one as [retired](PasswordHasher::with_retired_pepper)
/// and rehash at login.
#[derive(Clone)]
pub struct Pepper {
    id: KeyId,
    secret: Arc<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pepper")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Pepper {
    /// A pepper named `id` (1 to 8 bytes, stored in each hash) with `secret` (use 32 random
    /// bytes from a secrets manager; at least 16).
    ///
    /// # Errors
    /// [`PasswordError::InvalidPepperId`] for an empty or over-long id;
    /// [`PasswordError::WeakPepper`] for a secret under 16 bytes, such as an empty environment
    /// variable.
    pub fn new(id: &str, secret: impl Into<Vec<u8>>) -> Result<Self, PasswordError> {
        if id.is_empty() {
            return Err(PasswordError::InvalidPepperId);
        }
        let secret = secret.into();
        if secret.len() < MIN_PEPPER_BYTES {
            return Err(PasswordError::WeakPepper);
        }
        let id = KeyId::new(id.as_bytes()).map_err(|_| PasswordError::InvalidPepperId)?;
        Ok(Self {
            id,
            secret: Arc::new(Zeroizing::new(secret)),
        })
    }
}

/// Hashes and verifies passwords with argon2id, optionally with a [`Pepper`].
///
/// ```
/// # actix_web::rt::System::new().block_on(async {
/// use actix_login::password::{Pepper, PasswordHasher};
///
/// let old = Pepper::new("2025", b"first secret, from a vault".to_vec())?;
/// let new = Pepper::new("2026", b"second secret, from a vault".to_vec())?;
///
/// let stored = PasswordHasher::new().with_pepper(old.clone()).hash("a long passphrase").await?;
///
/// // After rotation the old pepper only verifies, and logins upgrade their hash.
/// let hasher = PasswordHasher::new().with_pepper(new).with_retired_pepper(old);
/// assert!(hasher.verify("a long passphrase", Some(&stored)).await?);
/// assert!(hasher.needs_rehash(&stored));
/// # Ok::<(), actix_login::password::PasswordError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    pepper: Option<Pepper>,
    retired: Vec<Pepper>,
    max_waiting: usize,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self {
            pepper: None,
            retired: Vec::new(),
            max_waiting: DEFAULT_MAX_WAITING,
        }
    }
}

/// How many strangers' verifications may wait for a hashing thread, by default, before the
/// next is refused with [`PasswordError::Busy`]: 32, about a second of waiting on a small
/// server (a hash takes 20 to 50 ms on one core).
pub const DEFAULT_MAX_WAITING: usize = 32;

/// Which line a hash waits in when every hashing thread is busy; see
/// [the hashing queue](self#the-hashing-queue).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lane {
    /// A login from a browser with a valid device cookie for its account: served before any
    /// stranger, never refused. One check per account at a time: a second one for the same
    /// account, while the first waits or runs, waits among strangers.
    KnownDevice(DeviceOwner),
    /// Everyone else: first come, first served, refused with [`PasswordError::Busy`] once
    /// [`max_waiting`](PasswordHasher::max_waiting) verifications wait.
    #[default]
    Stranger,
}

/// The account a [`Lane::KnownDevice`] check logs in to, as
/// [`LoginAttempt::lane`](crate::throttle::LoginAttempt::lane) names it.
///
/// The known-device lane goes before every stranger, so it must not be one account's to fill:
/// device cookies are cheap to multiply for an attacker who owns an account (every login hands
/// out a new one), and a lane taken over by one account would shut every stranger out. Each
/// account therefore has at most one check waiting or running there at a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceOwner(Arc<str>);

#[cfg_attr(not(feature = "throttle"), allow(dead_code))]
impl DeviceOwner {
    pub(crate) fn new(account: &str) -> Self {
        Self(Arc::from(account))
    }
}

impl PasswordHasher {
    /// A hasher with the default parameters and no pepper.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many strangers' verifications may wait for a hashing thread before the next is
    /// refused with [`PasswordError::Busy`] (default [`DEFAULT_MAX_WAITING`]). The queue is
    /// shared by the whole process; each verification compares it with its own hasher's bound.
    /// Known devices and hashes for storage are never refused.
    #[must_use]
    pub fn max_waiting(mut self, waiting: usize) -> Self {
        self.max_waiting = waiting;
        self
    }

    /// Hashes with `pepper` from now on.
    #[must_use]
    pub fn with_pepper(mut self, pepper: Pepper) -> Self {
        self.pepper = Some(pepper);
        self
    }

    /// Still verifies hashes made with `pepper`, and reports them as needing a rehash.
    #[must_use]
    pub fn with_retired_pepper(mut self, pepper: Pepper) -> Self {
        self.retired.push(pepper);
        self
    }

    /// Hashes `password` for storage.
    ///
    /// # Errors
    /// [`PasswordError::TooLong`] over [`MAX_PASSWORD_BYTES`]; otherwise only on a failure of
    /// the OS random generator or the runtime.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = normalized(password)?;
        let pepper = self.pepper.clone();
        off_the_executor(Lane::Stranger, usize::MAX, move || {
            hash_with(&password, pepper.as_ref())
        })
        .await
    }

    /// [`hash`](Self::hash) for an account being created. At most one such hash runs at a
    /// time, across the process: sign-ups queue behind each other for that one turn, so a
    /// flood of them holds at most one hashing slot and logins keep the rest of the queue.
    ///
    /// # Errors
    /// As [`hash`](Self::hash).
    pub async fn hash_registration(&self, password: &str) -> Result<String, PasswordError> {
        let password = normalized(password)?;
        let pepper = self.pepper.clone();
        let turn = Arc::clone(registration_turn())
            .acquire_owned()
            .await
            .map_err(|err| PasswordError::Interrupted(err.to_string()))?;
        off_the_executor(Lane::Stranger, usize::MAX, move || {
            // Held until the hash ends, even if the caller stops waiting for it.
            let _turn = turn;
            hash_with(&password, pepper.as_ref())
        })
        .await
    }

    /// Checks `password` against a stored hash.
    ///
    /// Pass `None` when there is no such user: the same argon2 work is done against a built-in
    /// hash, and the result is `false`. Looking the user up and passing what was found, as in
    /// `verify(pw, user.map(|u| u.hash.as_str()))`, keeps unknown users and wrong passwords
    /// indistinguishable in time as well as in answer.
    ///
    /// An unknown user costs one verification with the current parameters. A stored hash made
    /// with cheaper, outdated parameters is topped up with the argon2 work it lacks, so during
    /// a parameter migration old accounts take as long as unknown ones; a hash made with
    /// costlier parameters than the current ones takes longer, so lower them only together
    /// with a rehash of every account.
    ///
    /// It waits in the [strangers' lane](Lane::Stranger); see [`verify_in`](Self::verify_in)
    /// for a login from a known browser.
    ///
    /// # Errors
    /// [`PasswordError::TooLong`] over [`MAX_PASSWORD_BYTES`] (checked before any work);
    /// [`PasswordError::Busy`] when [`max_waiting`](Self::max_waiting) strangers already wait;
    /// [`PasswordError::MalformedHash`] or [`PasswordError::UnknownPepper`] for a stored hash
    /// this hasher cannot check.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        self.verify_in(Lane::Stranger, password, stored).await
    }

    /// [`verify`](Self::verify) in `lane`: pass [`LoginAttempt::lane`](crate::throttle::LoginAttempt::lane)
    /// so that a browser with a valid device cookie is not queued behind strangers.
    ///
    /// # Errors
    /// As [`verify`](Self::verify); [`PasswordError::Busy`] only in [`Lane::Stranger`].
    pub async fn verify_in(
        &self,
        lane: Lane,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let password = normalized(password)?;
        let known = stored.is_some();
        let stored = stored.unwrap_or(DUMMY_HASH).to_owned();
        let peppers: Vec<Pepper> = self.pepper.iter().chain(&self.retired).cloned().collect();
        let matched = off_the_executor(lane, self.max_waiting, move || {
            verify_with(&password, &stored, &peppers)
        })
        .await?;
        Ok(matched && known)
    }

    /// Whether `stored` was made with other parameters, another algorithm, salt or output length,
    /// or another pepper than this hasher uses now. Call it after a successful [`verify`](Self::verify) and store a
    /// fresh [`hash`](Self::hash) of the password the user just entered.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        let current = Params::default();
        let pepper_id = self.pepper.as_ref().map_or(&[][..], |p| p.id.as_bytes());
        let mut salt_buf = [0u8; 64];
        let salt_len = parsed
            .salt
            .and_then(|salt| salt.decode_b64(&mut salt_buf).ok().map(<[u8]>::len));
        parsed.algorithm != Algorithm::Argon2id.ident()
            || salt_len != Some(SALT_BYTES)
            || parsed.hash.map(|h| h.len()) != Some(OUTPUT_BYTES)
            || parsed.version != Some(Version::V0x13.into())
            || params.m_cost() != current.m_cost()
            || params.t_cost() != current.t_cost()
            || params.p_cost() != current.p_cost()
            || params.keyid() != pepper_id
    }
}

/// Hashes `password` for storage with the default [`PasswordHasher`].
///
/// # Errors
/// See [`PasswordHasher::hash`].
pub async fn hash(password: &str) -> Result<String, PasswordError> {
    PasswordHasher::default().hash(password).await
}

/// Hashes a new account's password with the default [`PasswordHasher`], one sign-up at a time.
/// See [`PasswordHasher::hash_registration`].
///
/// # Errors
/// See [`PasswordHasher::hash`].
pub async fn hash_registration(password: &str) -> Result<String, PasswordError> {
    PasswordHasher::default().hash_registration(password).await
}

/// Checks `password` against a stored hash with the default [`PasswordHasher`]; `None` for an
/// unknown user does the same work and returns `false`.
///
/// # Errors
/// See [`PasswordHasher::verify`].
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
    PasswordHasher::default().verify(password, stored).await
}

/// Whether `stored` predates the default parameters. See [`PasswordHasher::needs_rehash`].
pub fn needs_rehash(stored: &str) -> bool {
    PasswordHasher::default().needs_rehash(stored)
}

/// [`hash`] on the calling thread. For tools and seeding outside a request; inside a handler
/// it would block the worker.
///
/// # Errors
/// See [`hash`].
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    hash_with(&normalized(password)?, None)
}

/// [`verify`] against a known hash, on the calling thread.
///
/// # Errors
/// See [`verify`].
pub fn verify_blocking(password: &str, stored: &str) -> Result<bool, PasswordError> {
    verify_with(&normalized(password)?, stored, &[])
}

/// The NFKC form of `password`, which is what gets hashed; refuses oversized input first.
///
/// # Errors
/// [`PasswordError::TooLong`] over [`MAX_PASSWORD_BYTES`].
pub fn normalized(password: &str) -> Result<Zeroizing<String>, PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(Zeroizing::new(password.nfkc().collect()))
}

fn argon2_with(pepper: Option<&Pepper>) -> Result<Argon2<'_>, PasswordError> {
    let mut params = ParamsBuilder::new();
    if let Some(pepper) = pepper {
        params.keyid(pepper.id);
    }
    let params = params
        .build()
        .map_err(|e| PasswordError::Hashing(e.into()))?;
    Ok(match pepper {
        Some(pepper) => {
            Argon2::new_with_secret(&pepper.secret, Algorithm::Argon2id, Version::V0x13, params)
                .map_err(|e| PasswordError::Hashing(e.into()))?
        }
        None => Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
    })
}

fn hash_with(password: &str, pepper: Option<&Pepper>) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hashing)?;
    let hash = argon2_with(pepper)?
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Hashing)?;
    Ok(hash.to_string())
}

fn verify_with(password: &str, stored: &str, peppers: &[Pepper]) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored).map_err(PasswordError::MalformedHash)?;
    let params = Params::try_from(&parsed).map_err(PasswordError::MalformedHash)?;
    let pepper = if params.keyid().is_empty() {
        None
    } else {
        let pepper = peppers.iter().find(|p| p.id.as_bytes() == params.keyid());
        Some(pepper.ok_or(PasswordError::UnknownPepper)?)
    };
    let verdict = match argon2_with(pepper)?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(err) => Err(PasswordError::MalformedHash(err)),
    };
    make_up_for_outdated(&params);
    verdict
}

/// Spends the argon2 work by which a hash made with `params` falls short of one made with the
/// current parameters, so an account with an outdated hash answers no faster than an unknown
/// user, who costs a current verification. Without it, the time a login takes would tell
/// which accounts exist, and which have not logged in since the parameters changed.
///
/// argon2's work is one block operation per KiB of memory per pass, and filling fresh memory
/// costs too, so the missing work is spread over as many passes as keep the memory within the
/// current parameters'. Hashes costlier than the current parameters are left alone: unknown
/// users then answer faster, which [`PasswordHasher::verify`] documents.
fn make_up_for_outdated(params: &Params) {
    let current = Params::default();
    let work = |p: &Params| u64::from(p.m_cost()) * u64::from(p.t_cost());
    let missing = work(&current).saturating_sub(work(params));
    if missing < u64::from(Params::MIN_M_COST) {
        return;
    }
    let passes = missing.div_ceil(u64::from(current.m_cost())).max(1);
    let m_cost = u32::try_from(missing / passes).unwrap_or(u32::MAX);
    let passes = u32::try_from(passes).unwrap_or(u32::MAX);
    let Ok(padding) = Params::new(m_cost, passes, 1, Some(OUTPUT_BYTES)) else {
        return;
    };
    let mut output = [0u8; OUTPUT_BYTES];
    // The input is irrelevant; only the work counts.
    let _ = Argon2::new(Algorithm::Argon2id, Version::V0x13, padding).hash_password_into(
        b"padding",
        &[0u8; SALT_BYTES],
        &mut output,
    );
}

/// The hashing threads' turns: half the cores (at least one) hash at once, so serving requests
/// keeps CPU, and memory stays at 19 MiB per turn. A hash that finds none free waits in its
/// [`Lane`].
fn hashing_slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| Slots::new(hashing_threads()))
}

/// The one turn that registration hashes take in order, so that they wait among themselves
/// rather than ahead of logins in [`hashing_slots`].
fn registration_turn() -> &'static Arc<Semaphore> {
    static TURN: OnceLock<Arc<Semaphore>> = OnceLock::new();
    TURN.get_or_init(|| Arc::new(Semaphore::new(1)))
}

fn hashing_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.div_ceil(2)
}

/// Turns at the hashing threads, handed out free ones first, then to known devices before
/// strangers.
struct Slots {
    state: std::sync::Mutex<SlotState>,
}

struct SlotState {
    /// Turns nobody holds. Only above zero while nobody waits.
    free: usize,
    known: VecDeque<(DeviceOwner, tokio::sync::oneshot::Sender<Slot>)>,
    strangers: VecDeque<tokio::sync::oneshot::Sender<Slot>>,
    /// The accounts with a check waiting or running in the known-device lane.
    known_owners: HashSet<DeviceOwner>,
}

/// One turn at a hashing thread, given back when dropped: to the next waiter, or to the free
/// ones.
struct Slot {
    slots: &'static Slots,
    /// The account whose known-device check holds the turn, if one does.
    owner: Option<DeviceOwner>,
}

impl Slot {
    /// Gives up the turn without handing it on (it was never taken): only the account's place
    /// in the known-device lane is freed.
    fn forget(mut self) {
        if let Some(owner) = self.owner.take() {
            self.slots.lock().known_owners.remove(&owner);
        }
        std::mem::forget(self);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            self.slots.lock().known_owners.remove(&owner);
        }
        self.slots.release();
    }
}

impl Slots {
    fn new(turns: usize) -> Self {
        Self {
            state: std::sync::Mutex::new(SlotState {
                free: turns.max(1),
                known: VecDeque::new(),
                strangers: VecDeque::new(),
                known_owners: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A turn in `lane`, at once if one is free; refused in the strangers' lane when
    /// `max_waiting` wait there already.
    async fn acquire(&'static self, lane: Lane, max_waiting: usize) -> Result<Slot, PasswordError> {
        let turn = {
            let mut state = self.lock();
            // An account's second check at once waits among strangers.
            let owner = match lane {
                Lane::KnownDevice(owner) if state.known_owners.insert(owner.clone()) => Some(owner),
                Lane::KnownDevice(_) | Lane::Stranger => None,
            };
            if state.free > 0 {
                state.free -= 1;
                return Ok(Slot { slots: self, owner });
            }
            let (give, turn) = tokio::sync::oneshot::channel();
            match owner {
                Some(owner) => state.known.push_back((owner, give)),
                None => {
                    if state.strangers.len() >= max_waiting {
                        // Waiters whose callers gave up (clients that left) hold no place.
                        state.strangers.retain(|waiter| !waiter.is_closed());
                    }
                    if state.strangers.len() >= max_waiting {
                        return Err(PasswordError::Busy);
                    }
                    state.strangers.push_back(give);
                }
            }
            turn
        };
        turn.await
            .map_err(|err| PasswordError::Interrupted(err.to_string()))
    }

    /// Hands a turn that ends to the next waiter, known devices first, or frees it.
    fn release(&'static self) {
        loop {
            let (next, owner) = {
                let mut state = self.lock();
                let next = match state.known.pop_front() {
                    Some((owner, waiter)) => Some((waiter, Some(owner))),
                    None => state.strangers.pop_front().map(|waiter| (waiter, None)),
                };
                match next {
                    Some(next) => next,
                    None => {
                        state.free += 1;
                        return;
                    }
                }
            };
            match next.send(Slot { slots: self, owner }) {
                Ok(()) => return,
                // That waiter gave up: the turn goes to the next one, without a second release.
                Err(turn) => turn.forget(),
            }
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> (usize, usize) {
        let state = self.lock();
        (state.known.len(), state.strangers.len())
    }
}

async fn off_the_executor<T: Send + 'static>(
    lane: Lane,
    max_waiting: usize,
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    run_in_slot(hashing_slots(), lane, max_waiting, work).await
}

async fn run_in_slot<T: Send + 'static>(
    slots: &'static Slots,
    lane: Lane,
    max_waiting: usize,
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let slot = slots.acquire(lane, max_waiting).await?;
    let (done, result) = tokio::sync::oneshot::channel();
    // The slot travels with the work: a caller that gives up (a client that disconnects) drops
    // its future, but the hash runs on, and must keep its slot until it ends.
    hashing_pool().run(Box::new(move || {
        let _slot = slot;
        // Nobody may be waiting any more; the hash still had to finish to free the slot.
        let _ = done.send(work());
    }))?;
    result
        .await
        .map_err(|err| PasswordError::Interrupted(err.to_string()))?
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that do nothing but hash, at a lower CPU priority.
///
/// Not Tokio's blocking pool: its threads also run the app's other blocking work, which must not
/// inherit a lowered priority, and a thread's priority can be lowered but not raised back
/// without privileges.
struct HashingPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl HashingPool {
    fn run(&self, job: Job) -> Result<(), PasswordError> {
        self.jobs
            .send(job)
            .map_err(|_| PasswordError::Interrupted("no hashing thread is running".to_owned()))
    }
}

fn hashing_pool() -> &'static HashingPool {
    static POOL: OnceLock<HashingPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        // As many threads as slots: a job that holds a slot always finds a free thread.
        for n in 0..hashing_threads() {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("actix-login-hash-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a password hashing thread");
            }
        }
        HashingPool { jobs }
    })
}

/// Lowers the calling thread's CPU priority to [`HASHING_NICE`], so that serving requests comes
/// first. Failing to is not fatal: hashing then competes as an equal.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux a thread id addresses one thread; other systems would renice the process.
        let thread = rustix::thread::gettid();
        if let Err(err) = rustix::process::setpriority_process(Some(thread), HASHING_NICE) {
            tracing::warn!(error = %err, "could not lower the priority of password hashing");
        }
    }
}

/// The hashing threads' nice value. At 10 the scheduler weighs a request thread about nine
/// times as heavily, so requests preempt hashing at once; at 19 a saturated server would
/// starve logins altogether (a thread at 19 gets about 1.5 % of a busy core).
#[cfg(target_os = "linux")]
const HASHING_NICE: i32 = 10;

#[cfg(test)]
mod tests;
