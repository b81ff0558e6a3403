//! The optional environment knobs: session timeouts and limits, proxies, cookie domain, throttle.

use std::time::Duration;

use actix_login::links::{LinkLimit, LinkPurpose, LinkSettings};
use actix_login::throttle::{Limit, LoginThrottle};
use actix_login::{LoginMiddlewareBuilder, Timeouts};

/// Applies the optional environment knobs to the middleware settings.
pub(crate) fn configure(
    mut builder: LoginMiddlewareBuilder,
) -> std::io::Result<LoginMiddlewareBuilder> {
    let mut browser = Timeouts::BROWSER;
    if let Some(secs) = env_number("IDLE_TIMEOUT_SECS")? {
        browser = browser.with_idle(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("ABSOLUTE_TIMEOUT_SECS")? {
        browser = browser.with_absolute(Duration::from_secs(secs));
    }
    let mut remembered = Timeouts::REMEMBERED;
    if let Some(secs) = env_number("REMEMBER_IDLE_TIMEOUT_SECS")? {
        remembered = remembered.with_idle(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("REMEMBER_ABSOLUTE_TIMEOUT_SECS")? {
        remembered = remembered.with_absolute(Duration::from_secs(secs));
    }
    let mut anonymous = Timeouts::ANONYMOUS;
    if let Some(secs) = env_number("ANON_IDLE_TIMEOUT_SECS")? {
        anonymous = anonymous.with_idle(Duration::from_secs(secs));
    }
    builder = builder
        .timeouts(browser)
        .remember_timeouts(remembered)
        .anonymous_timeouts(anonymous);
    if let Some(secs) = env_number("FRESH_WINDOW_SECS")? {
        builder = builder.fresh_window(Duration::from_secs(secs));
    }
    if let Some(max) = env_number("MAX_SESSIONS_PER_USER")? {
        let max = usize::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.max_sessions_per_user(max);
    }
    if let Some(max) = env_number("MAX_TOKENS_PER_USER")? {
        let max = usize::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.max_tokens_per_user(max);
    }
    if let Some(max) = env_number("TOKENS_PER_HOUR")? {
        let max = u32::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.token_creation_limit(max, Duration::from_secs(60 * 60));
    }
    let mut links = LinkSettings::new();
    for (name, purpose) in [
        ("MAGIC_LINK_TTL_SECS", LinkPurpose::SignIn),
        ("PASSWORD_RESET_TTL_SECS", LinkPurpose::PasswordReset),
        ("VERIFY_EMAIL_TTL_SECS", LinkPurpose::VerifyEmail),
        ("CHANGE_EMAIL_TTL_SECS", LinkPurpose::ChangeEmail),
    ] {
        if let Some(secs) = env_number(name)? {
            links = links.lifetime(purpose, Duration::from_secs(secs));
        }
    }
    if let Some(max) = env_number("LINKS_PER_ACCOUNT")? {
        let max = u32::try_from(max).map_err(std::io::Error::other)?;
        let hour = Duration::from_secs(60 * 60);
        links = links
            .per_account(LinkLimit::new(max, hour))
            .per_address(LinkLimit::new(max, hour));
    }
    builder = builder.one_time_links(links);
    if let Some(domain) = std::env::var("COOKIE_DOMAIN")
        .ok()
        .filter(|v| !v.is_empty())
    {
        builder = builder.cookie_domain(domain);
    }
    if let Some(proxies) = std::env::var("TRUST_PROXIES")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let proxies = proxies
            .split(',')
            .map(|ip| {
                ip.trim().parse().map_err(|_| {
                    std::io::Error::other(format!("TRUST_PROXIES: {ip:?} is not an IP address"))
                })
            })
            .collect::<std::io::Result<Vec<std::net::IpAddr>>>()?;
        builder = builder.trust_proxies(proxies);
    }
    Ok(builder)
}

/// The login throttle, with `LOGIN_MAX_FAILURES` failures per account and address allowed per
/// `LOGIN_WINDOW_SECS`; the per-address and per-account ceilings scale with it, unless
/// `LOGIN_ACCOUNT_MAX_FAILURES` sets the account-wide one.
pub(crate) fn throttle(throttle: LoginThrottle) -> std::io::Result<LoginThrottle> {
    let max = env_number("LOGIN_MAX_FAILURES")?;
    let window = env_number("LOGIN_WINDOW_SECS")?;
    let account_max = env_number("LOGIN_ACCOUNT_MAX_FAILURES")?;
    let throttle = match env_number("REGISTRATION_MAX")? {
        Some(n) => {
            let n = u32::try_from(n).map_err(std::io::Error::other)?;
            throttle.registrations_per_client(Limit::new(n, Duration::from_secs(60 * 60)))
        }
        None => throttle,
    };
    if max.is_none() && window.is_none() && account_max.is_none() {
        return Ok(throttle);
    }
    let max = u32::try_from(max.unwrap_or(5)).map_err(std::io::Error::other)?;
    let window = Duration::from_secs(window.unwrap_or(15 * 60));
    let account_max = match account_max {
        Some(n) => u32::try_from(n).map_err(std::io::Error::other)?,
        None => max.saturating_mul(20).max(100),
    };
    Ok(throttle
        .per_account_and_client(Limit::new(max, window))
        .per_client(Limit::new(max.saturating_mul(4).max(20), window))
        .per_account(Limit::new(account_max, window)))
}

pub(crate) fn env_number(name: &str) -> std::io::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map(Some).map_err(|_| {
            std::io::Error::other(format!("{name} must be a whole number, not {value:?}"))
        }),
        _ => Ok(None),
    }
}
