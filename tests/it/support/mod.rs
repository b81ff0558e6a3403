//! Shared test support: real `redis-server` processes on free ports, deployments of them, and
//! helpers to drive an app and inspect a server.

pub mod acl;
pub mod browser;
pub mod cached;
pub mod chaos_proxy;
pub mod cluster;
pub mod deployment;
pub mod example;
pub mod forwarder;
pub mod http;
pub mod logs;
pub mod mailbox;
pub mod monitor;
pub mod passkeys;
pub mod process;
pub mod quickstart;
pub mod redis_server;
pub mod sentinel;
pub mod tls;
pub mod wrapped_store;
