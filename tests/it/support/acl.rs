//! A least-privilege ACL user for the store.

use super::redis_server::{connection, RedisServer};

/// The commands `RedisStore` runs, as an ACL rule: its reads and writes, `MULTI`/`EXEC`, its
/// scripts (`EVALSHA`, `SCRIPT LOAD` when the server lacks one, and the hash, `EXISTS` and
/// `INCR`/`DECR` commands they call), `INFO` for the version check at connect (and the local
/// cache's check that it reaches the store's server), and `WAIT` for session-ending deletes
/// that must reach a replica; `GETDEL` uses a one-time link; `LPUSH`, `LTRIM` and `LRANGE`
/// write and read the activity log.
pub const STORE_COMMANDS: &str = "-@all +get +set +getdel +del +exists +ping +pttl +pexpire \
    +hget +hmget +hgetall +hset +hdel +hexists +hkeys \
    +incr +decr +multi +exec +evalsha +script|load +info +wait +lpush +ltrim +lrange";

/// Adds an ACL user `name` with `password` that may run only the store's commands, on keys
/// under `prefix` only.
pub fn acl_user(server: &RedisServer, name: &str, password: &str, prefix: &str) {
    let mut conn = connection(&server.url()).expect("connect as admin");
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg(name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg(format!("~{prefix}:*"));
    for rule in STORE_COMMANDS.split_whitespace() {
        setuser.arg(rule);
    }
    setuser.exec(&mut conn).expect("ACL SETUSER");
}
