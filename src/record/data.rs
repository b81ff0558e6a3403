//! The app's own data in a session: carts, flash messages, OAuth `state`, form steps.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The data a session holds besides its login: named values, each kept as JSON text.
///
/// Values are stored as the JSON the app serialised, and decoded only when a handler asks for
/// them, into whatever type it names. The [size](Self::size) that counts against the per-session
/// limit is the sum of the names' and values' lengths in bytes, plus 64 bytes for each value,
/// what a store spends on keeping it.
///
/// Cloning is cheap: clones share the values until one of them changes (a cached session hands
/// every request its data without copying it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionData(Arc<BTreeMap<String, String>>);

impl SessionData {
    /// No data.
    pub fn new() -> Self {
        Self::default()
    }

    /// The JSON text stored under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Stores `json` under `name`, returning what was there.
    pub fn insert(&mut self, name: impl Into<String>, json: impl Into<String>) -> Option<String> {
        Arc::make_mut(&mut self.0).insert(name.into(), json.into())
    }

    /// Removes `name`, returning what was there.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        if !self.0.contains_key(name) {
            // Not worth unsharing the values for.
            return None;
        }
        Arc::make_mut(&mut self.0).remove(name)
    }

    /// Every name and its JSON text, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes that count against the per-session limit: every name and value, in UTF-8, and
    /// 64 bytes for each value (what a store spends on keeping it).
    pub fn size(&self) -> usize {
        self.0.iter().map(|(k, v)| entry_size(k, v)).sum()
    }

    /// Applies `changes` in order, returning the value each one replaced or removed (`None` for
    /// [`DataChange::Clear`]).
    pub fn apply(&mut self, changes: &[DataChange]) -> Vec<Option<String>> {
        changes
            .iter()
            .map(|change| match change {
                DataChange::Insert { name, json } => self.insert(name.clone(), json.clone()),
                DataChange::Remove { name } => self.remove(name),
                DataChange::Clear => {
                    self.0 = Arc::default();
                    None
                }
            })
            .collect()
    }
}

impl FromIterator<(String, String)> for SessionData {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().collect()))
    }
}

impl IntoIterator for SessionData {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

/// What each entry costs a store beyond its name and value, counted against the limit: Redis
/// keeps a hash entry, two string headers and a bucket for each field, about this much once
/// the hash outgrows its compact encoding. Without it, a limit on bytes of names and values
/// would let many tiny values take several times the limit in memory.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// The bytes one entry counts against the per-session limit.
pub(crate) fn entry_size(name: &str, json: &str) -> usize {
    name.len() + json.len() + ENTRY_OVERHEAD
}

/// One change to a session's data, applied by a store atomically with the others of its write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataChange {
    /// Store `json` under `name`, replacing what was there.
    Insert {
        /// The value's name.
        name: String,
        /// The value as JSON text.
        json: String,
    },
    /// Remove `name`.
    Remove {
        /// The value's name.
        name: String,
    },
    /// Remove every value.
    Clear,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_in_order_and_report_what_they_replaced() {
        let mut data = SessionData::new();
        let before = data.apply(&[
            DataChange::Insert {
                name: "cart".into(),
                json: "[1]".into(),
            },
            DataChange::Insert {
                name: "cart".into(),
                json: "[1,2]".into(),
            },
            DataChange::Remove {
                name: "none".into(),
            },
        ]);
        assert_eq!(before, vec![None, Some("[1]".into()), None]);
        assert_eq!(data.get("cart"), Some("[1,2]"));
        assert_eq!(data.size(), "cart".len() + "[1,2]".len() + ENTRY_OVERHEAD);
        data.apply(&[DataChange::Clear]);
        assert!(data.is_empty());
    }
}
