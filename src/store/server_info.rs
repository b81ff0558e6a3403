//! Reading what a Redis server says of itself.

/// The `run_id` in the text of an `INFO server` reply: what tells one Redis process from another,
/// even on the same address.
pub(crate) fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}
