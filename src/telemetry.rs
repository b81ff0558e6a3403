//! Metrics through the `metrics` facade (cargo feature `metrics`): the app installs whichever
//! recorder it likes (Prometheus, OpenTelemetry…); without one, or without the feature, every
//! call here does nothing. Any layer may count here; nothing here knows a layer.
//! The metrics and their labels are listed in the `events` module's docs.

#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

/// A login's outcome: `success`, `failure` or `throttled`.
pub(crate) fn login(result: &'static str) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::counter!("actix_login_logins_total", "result" => result).increment(1);
        if result == "throttled" {
            ::metrics::counter!("actix_login_throttled_total").increment(1);
        }
    }
}

/// A session ended by its own client.
pub(crate) fn logout() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("actix_login_logouts_total").increment(1);
}

/// `count` sessions ended by `by`.
pub(crate) fn revocations(by: &'static str, count: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("actix_login_revocations_total", "by" => by)
        .increment(u64::try_from(count).unwrap_or(u64::MAX));
}

/// A store operation that failed.
pub(crate) fn store_error(op: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("actix_login_store_errors_total", "op" => op).increment(1);
}

/// Times one store command (or pipeline, or script): [`StoreCommand::finish`] records how long
/// it took. Without the `metrics` feature it reads no clock: every lookup would pay for it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct StoreCommand {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl StoreCommand {
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn finish(self) {
        #[cfg(feature = "metrics")]
        ::metrics::histogram!("actix_login_store_command_seconds")
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A local cache lookup that found the record, or did not.
pub(crate) fn cache(hit: bool) {
    #[cfg(feature = "metrics")]
    if hit {
        ::metrics::counter!("actix_login_cache_hits_total").increment(1);
    } else {
        ::metrics::counter!("actix_login_cache_misses_total").increment(1);
    }
}

/// A security event that found the queue full.
pub(crate) fn event_dropped() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("actix_login_events_dropped_total").increment(1);
}

/// A second-factor code's outcome: `success`, `failure` or `throttled`.
pub(crate) fn second_factor_code(result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("actix_login_second_factor_codes_total", "result" => result).increment(1);
}

/// A change to an account's second factor: `enrolled`, `recovery_codes_regenerated` or
/// `browser_trusted`.
pub(crate) fn second_factor_change(change: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("actix_login_second_factor_changes_total", "change" => change).increment(1);
}

/// A one-time link issued (`used` false) or used, for `purpose`.
pub(crate) fn link(purpose: &'static str, used: bool) {
    #[cfg(feature = "metrics")]
    if used {
        ::metrics::counter!("actix_login_links_used_total", "purpose" => purpose).increment(1);
    } else {
        ::metrics::counter!("actix_login_links_issued_total", "purpose" => purpose).increment(1);
    }
}
