//! The bytes a session is stored as, and the TTLs that go with them.

use std::time::SystemTime;

use crate::record::{from_unix_millis, unix_millis};
use crate::store::StoredSession;
use crate::{SessionRecord, StoreError};

/// The stored value of a session: its idle deadline in Unix milliseconds, a space, and the
/// record as JSON.
///
/// The deadline travels in the value, and not only as the key's TTL, so that one `GET` tells a
/// request everything it needs, and a cached copy knows by itself when it has expired. The TTL
/// is set to the same moment; it frees the memory, the value decides.
pub(super) fn encode(
    record: &SessionRecord,
    expires_at: SystemTime,
) -> Result<Vec<u8>, StoreError> {
    let mut value = unix_millis(expires_at).to_string().into_bytes();
    value.push(b' ');
    serde_json::to_writer(&mut value, record).map_err(StoreError::corrupt)?;
    Ok(value)
}

/// The session in a value written by [`encode`].
pub(super) fn decode(value: &[u8]) -> Result<StoredSession, StoreError> {
    let corrupt = || StoreError::corrupt("session value has no deadline");
    let space = value.iter().position(|&b| b == b' ').ok_or_else(corrupt)?;
    let (deadline, json) = value.split_at(space);
    let deadline: u64 = std::str::from_utf8(deadline)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(corrupt)?;
    let record = serde_json::from_slice(&json[1..]).map_err(StoreError::corrupt)?;
    Ok(StoredSession {
        record,
        expires_at: from_unix_millis(deadline),
    })
}

/// Redis wants a positive whole number of milliseconds; a deadline already reached becomes 1 ms.
pub(super) fn ttl_millis(expires_at: SystemTime) -> u64 {
    let remaining = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    u64::try_from(remaining.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record() -> SessionRecord {
        let profile = serde_json::value::RawValue::from_string(r#"{"name":"x"}"#.to_owned())
            .expect("valid JSON");
        let now = SystemTime::now();
        SessionRecord::new("pub", "7", profile, now, now + Duration::from_secs(3600))
    }

    #[test]
    fn a_value_carries_its_deadline_before_the_json() {
        let record = record();
        let deadline = from_unix_millis(1_700_000_000_123);
        let value = encode(&record, deadline).unwrap();
        assert!(value.starts_with(b"1700000000123 {"), "{value:?}");
        let stored = decode(&value).unwrap();
        assert_eq!(stored.expires_at, deadline);
        assert_eq!(stored.record.user_id(), record.user_id());
    }

    #[test]
    fn values_without_a_deadline_are_corrupt_not_a_panic() {
        for bad in [
            &b""[..],
            b"{}",
            b"abc {}",
            b" {}",
            b"12 ",
            b"12 not json",
            b"\xff {}",
        ] {
            assert!(
                matches!(decode(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ttls_are_whole_positive_milliseconds() {
        let past = SystemTime::now() - Duration::from_secs(5);
        assert_eq!(ttl_millis(past), 1);
        let soon = SystemTime::now() + Duration::from_secs(60);
        let ttl = ttl_millis(soon);
        assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    }
}
