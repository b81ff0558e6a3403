//! The Actix layer: a thin translation between HTTP and the [engine](crate::engine).
//!
//! A request flows one way through it: the [`LoginMiddleware`] reads the bearer token
//! (`bearer.rs`) or the cookie (`cookie.rs`), judges where the request comes from (`csrf.rs`) and who sent it
//! (`client.rs`), and leaves a per-request state (`request.rs`) in the request's extensions.
//! Extractors (`extractor.rs`, `session.rs`) and [`Require`] read that state and ask the engine;
//! on the way out the middleware turns what happened into a `Set-Cookie`, and `response.rs`
//! turns errors into JSON answers.

mod bearer;
mod builder;
mod client;
mod cookie;
mod csrf;
mod extractor;
mod flash;
#[cfg(test)]
mod hostile_input;
mod login;
mod middleware;
mod origin;
mod request;
mod require;
mod response;
mod session;
#[cfg(feature = "test-util")]
mod testing;

pub use self::builder::{ConfigError, LoginMiddlewareBuilder};
pub use self::client::ClientIpHeader;
#[cfg(feature = "throttle")]
pub(crate) use self::csrf::Provenance;
pub use self::csrf::{CSRF_FIELD, CSRF_HEADER};
pub use self::extractor::{AuthUser, MaybeUser};
pub use self::flash::{FlashLevel, FlashMessage};
pub use self::login::{Login, SecondFactor};
pub use self::middleware::LoginMiddleware;
#[cfg(feature = "throttle")]
// What `protect` reads of a request's session, for the features that read it.
#[cfg(feature = "two-factor")]
pub(crate) use self::request::not_impersonating;
#[cfg(feature = "throttle")]
pub(crate) use self::request::RequestSession;
pub use self::require::{safe_next, Require};
#[cfg(feature = "password")]
pub(crate) use self::response::json_error;
#[cfg(feature = "throttle")]
pub(crate) use self::session::user_agent_of;
pub use self::session::Session;
