//! Login protection, beside the session engine: brute-force throttling, a second factor,
//! password hashing, the password policy and passkeys. Each is usable on its own and behind its own
//! cargo feature (the second factor's login state, `two_factor::SecondFactor`, is always
//! there).

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
pub mod two_factor;
