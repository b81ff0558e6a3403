//! Password hashing and verification with argon2id.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) with a 16-byte salt
//! from the operating system's CSPRNG, using the OWASP Password Storage Cheat Sheet's baseline
//! parameters: 19 MiB of memory, 2 passes, 1 lane.
//!
//! Each hash takes tens of milliseconds of CPU and 19 MiB of memory, so [`hash`] and [`verify`]
//! run on Tokio's blocking thread pool, never on the thread that serves requests, and at most
//! half the machine's cores hash at once; further calls wait their turn without blocking
//! anything. A burst of logins therefore cannot stall other requests or exhaust memory.
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

use std::sync::{Arc, OnceLock};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::error::json_error;

/// Bytes of salt per hash.
const SALT_BYTES: usize = 16;

/// The hash of a random password nobody knows, made with the same parameters as [`hash`].
/// Verifying against it costs what verifying a real user's password costs, which is what keeps
/// "no such user" and "wrong password" apart only in the answer, not in the time taken.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$8s15I/DLCPSjiWE4h1rHkg$tcmYoyh73odbLl1b3ee5IGINVXbFq5tMotxab+f8n1U";

/// Why a password could not be hashed or checked. These are server faults, never the client's:
/// as a response, each is a `500` with `{"error":"internal error"}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The stored hash is not a PHC string argon2 can read.
    #[error("stored password hash is malformed: {0}")]
    MalformedHash(argon2::password_hash::Error),
    /// argon2 failed to hash.
    #[error("password hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(getrandom::Error),
    /// The blocking task was cancelled, for example because the runtime is shutting down.
    #[error("password task did not complete: {0}")]
    Interrupted(String),
}

impl ResponseError for PasswordError {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        json_error(self.status_code(), "internal error")
    }
}

/// Hashes `password` for storage.
///
/// # Errors
/// Only on a failure of the OS random generator or the runtime, never for any password.
pub async fn hash(password: &str) -> Result<String, PasswordError> {
    let password = Zeroizing::new(password.to_owned());
    off_the_executor(move || hash_blocking(&password)).await
}

/// Checks `password` against a stored hash.
///
/// Pass `None` when there is no such user: the same argon2 work is done against a built-in hash,
/// and the result is `false`. Looking the user up and passing what was found, as in
/// `verify(pw, user.map(|u| u.hash.as_str()))`, keeps unknown users and wrong passwords
/// indistinguishable in time as well as in answer.
///
/// # Errors
/// [`PasswordError::MalformedHash`] if the stored hash cannot be parsed.
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
    let password = Zeroizing::new(password.to_owned());
    let known = stored.is_some();
    let stored = stored.unwrap_or(DUMMY_HASH).to_owned();
    let matched = off_the_executor(move || verify_blocking(&password, &stored)).await?;
    Ok(matched && known)
}

/// [`hash`] on the calling thread. For tools and seeding outside a request; inside a handler
/// it would block the worker.
///
/// # Errors
/// See [`hash`].
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hashing)?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Hashing)?;
    Ok(hash.to_string())
}

/// [`verify`] against a known hash, on the calling thread.
///
/// # Errors
/// See [`verify`].
pub fn verify_blocking(password: &str, stored: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored).map_err(PasswordError::MalformedHash)?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(err) => Err(PasswordError::MalformedHash(err)),
    }
}

/// Limits how many hashes run at once: half the cores (at least one), so serving requests keeps
/// CPU, and memory stays at 19 MiB per permit.
fn hashing_slots() -> &'static Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Arc::new(Semaphore::new(cores.div_ceil(2)))
    })
}

async fn off_the_executor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    run_in_slot(hashing_slots(), work).await
}

async fn run_in_slot<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|err| PasswordError::Interrupted(err.to_string()))?;
    // The slot travels with the work: a caller that gives up (a client that disconnects) drops
    // its future, but the hash runs on, and must keep its slot until it ends.
    actix_web::rt::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
    .map_err(|err| PasswordError::Interrupted(err.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params_of(phc: &str) -> String {
        let parsed = PasswordHash::new(phc).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.version, Some(0x13));
        parsed.params.to_string()
    }

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_16_byte_salts() {
        let phc = hash_blocking("pässwörd 🔑").unwrap();
        assert_eq!(params_of(&phc), "m=19456,t=2,p=1");
        let parsed = PasswordHash::new(&phc).unwrap();
        let mut salt = [0u8; 64];
        assert_eq!(
            parsed.salt.unwrap().decode_b64(&mut salt).unwrap().len(),
            16
        );
        assert!(verify_blocking("pässwörd 🔑", &phc).unwrap());
        assert!(!verify_blocking("pässwörd 🔑 ", &phc).unwrap());
        assert!(!verify_blocking("pässwörd", &phc).unwrap());
    }

    #[test]
    fn same_password_gets_different_hashes() {
        assert_ne!(
            hash_blocking("same").unwrap(),
            hash_blocking("same").unwrap()
        );
    }

    #[test]
    fn dummy_hash_uses_the_current_parameters() {
        assert_eq!(
            params_of(DUMMY_HASH),
            params_of(&hash_blocking("x").unwrap())
        );
    }

    #[test]
    fn malformed_stored_hash_is_an_error_not_a_match() {
        for bad in ["", "plaintext", "$argon2id$v=19$m=19456,t=2,p=1$$"] {
            assert!(matches!(
                verify_blocking("x", bad),
                Err(PasswordError::MalformedHash(_))
            ));
        }
    }

    #[actix_web::test]
    async fn a_cancelled_caller_does_not_free_the_slot_of_a_running_hash() {
        let slots = Arc::new(Semaphore::new(1));
        let slow = || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        };
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            run_in_slot(&slots, slow),
        )
        .await;
        assert!(gave_up.is_err(), "the call should have timed out");
        assert_eq!(
            slots.available_permits(),
            0,
            "slot freed while the hash still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(slots.available_permits(), 1);
    }

    #[actix_web::test]
    async fn unknown_user_never_matches_even_with_the_dummy_password() {
        assert!(!verify("", None).await.unwrap());
        let real = hash("pw").await.unwrap();
        assert!(verify("pw", Some(&real)).await.unwrap());
    }
}
