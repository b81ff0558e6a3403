//! placeholder
#![forbid(unsafe_code)]
mod config;
mod context;
mod cookie;
mod error;
mod extractor;
mod middleware;
pub mod password;
mod record;
pub mod store;
mod token;
pub use actix_web::cookie::SameSite;
pub use config::{LoginMiddlewareBuilder, DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
pub use error::{Error, StoreError};
pub use extractor::{AuthUser, Session};
pub use middleware::LoginMiddleware;
pub use record::SessionRecord;
pub use store::{MemoryStore, RedisStore, SessionStore};
pub use token::SessionKey;
