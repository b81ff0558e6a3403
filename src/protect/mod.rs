//! Login protection, beside the session engine: brute-force throttling, password hashing and
//! the password policy, passkeys. Each is usable on its own and behind its own cargo feature.

#[cfg(feature = "throttle")]
mod counter;
#[cfg(feature = "throttle")]
mod device;
#[cfg(test)]
mod hostile_input;
#[cfg(feature = "passkeys")]
pub mod passkeys;
#[cfg(feature = "password")]
pub mod password;
#[cfg(feature = "policy")]
pub mod policy;
#[cfg(feature = "password")]
mod response;
#[cfg(feature = "throttle")]
pub mod throttle;
