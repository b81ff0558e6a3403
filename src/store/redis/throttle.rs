//! Login-throttle counters in Redis: one Lua script per operation, so a check and its count are
//! one atomic step.

use std::time::Duration;

use super::RedisStore;
use crate::error::StoreError;
use crate::store::{Admission, Counter, ThrottleStore};

/// Checks every counter, then counts the attempt in all of them or in none. `KEYS` are the
/// counters; `ARGV` holds `max, window_ms` per counter. Returns -1 when admitted, else the
/// milliseconds until the fullest window ends.
const ADMIT_SCRIPT: &str = r"
local retry = -1
for i, key in ipairs(KEYS) do
  local max = tonumber(ARGV[2 * i - 1])
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= max then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, ARGV[2 * i])
      ttl = tonumber(ARGV[2 * i])
    end
    if ttl > retry then retry = ttl end
  end
end
if retry >= 0 then return retry end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[2 * i], 'NX')
end
return -1
";

/// `ADMIT_SCRIPT` for one counter (`KEYS[1]`, `ARGV[1]` = max) that must exist: -2 when it
/// does not, -1 when admitted, else the milliseconds left in its window.
const ADMIT_EXISTING_SCRIPT: &str = r"
local count = redis.call('GET', KEYS[1])
if not count then return -2 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return -2 end
if tonumber(count) >= tonumber(ARGV[1]) then return ttl end
redis.call('INCR', KEYS[1])
return -1
";

/// Takes one back from each existing counter above zero.
const RELEASE_SCRIPT: &str = r"
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 0 then redis.call('DECR', key) end
end
return 0
";

impl ThrottleStore for RedisStore {
    async fn admit(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        // One script over all counters: the check and the count are one atomic step, so
        // concurrent attempts cannot share room that only one of them has. The counters share
        // a hash tag, so the script stays on one node of a cluster.
        let script = redis::Script::new(ADMIT_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for counter in counters {
            let window = u64::try_from(counter.window.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            invocation
                .key(self.counter_key(counter.name))
                .arg(counter.max)
                .arg(window);
        }
        let mut conn = self.connection.clone();
        let verdict: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
        Ok(match u64::try_from(verdict) {
            Ok(ms) => Admission::Refused {
                retry_after: Duration::from_millis(ms),
            },
            Err(_) => Admission::Admitted,
        })
    }

    async fn admit_existing(&self, counter: Counter<'_>) -> Result<Option<Admission>, StoreError> {
        let script = redis::Script::new(ADMIT_EXISTING_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.counter_key(counter.name))
            .arg(counter.max);
        let mut conn = self.connection.clone();
        let verdict: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
        Ok(match verdict {
            -2 => None,
            -1 => Some(Admission::Admitted),
            ms => Some(Admission::Refused {
                retry_after: Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
            }),
        })
    }

    async fn release(&self, counters: &[&str]) -> Result<(), StoreError> {
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for name in counters {
            invocation.key(self.counter_key(name));
        }
        let mut conn = self.connection.clone();
        self.run(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn reset(&self, counter: &str) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        self.run(
            redis::cmd("DEL")
                .arg(self.counter_key(counter))
                .query_async::<()>(&mut conn),
        )
        .await
    }
}
