//! Names of throttle counters. The store sees a short hash, never a username, a client's
//! address paired with one, or a device token; both the throttle and the device tokens name
//! their counters this way, so it lives below both.

use sha2::{Digest, Sha256};

/// The first 128 bits of the SHA-256 of `text`, in lowercase hex.
pub(super) fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
