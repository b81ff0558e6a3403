//! The integration tests, as one binary: one build, one link, and one shared `redis-server` for
//! the tests that need no private one.
//!
//! `cargo test --all-features` runs them all; `cargo test --all-features --test it store::`
//! runs one module. Without `test-util`, the store contract tests are left out and say so.

mod support;

mod api_tokens;
mod cache;
mod chaos;
#[cfg(feature = "test-util")]
mod contract;
mod csrf;
mod data;
mod deployments;
mod events;
mod fast_path;
mod faults;
mod html_login;
mod interop;
mod lifecycle;
mod links;
mod login;
mod matrix;
mod memory_pressure;
mod minimal;
mod oauth;
mod passkeys;
mod password;
mod quickstart;
mod quickstart_activity;
mod quickstart_links;
mod quickstart_second_factor;
mod rotation;
mod second_factor;
mod sentinel;
mod shutdown;
mod store;
mod throttle;
mod tokens;
