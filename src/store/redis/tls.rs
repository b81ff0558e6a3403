//! `rediss://`: the certificates the store trusts, the checks made before it dials, and the
//! rustls crypto provider.
//!
//! redis-rs builds its rustls configuration itself, from rustls's process-wide default crypto
//! provider, and takes no configuration or provider from the app: there is no way to hand it
//! ring for this store's connections alone. So the store does not pretend to: whether it may
//! install ring as that process-wide default is a documented builder option,
//! [`RedisStoreBuilder::install_ring_provider`](super::RedisStoreBuilder::install_ring_provider),
//! and it logs when it does.
//!
//! This module knows nothing of the builder or the connection: it is handed the URLs and the
//! [`TlsOptions`], and answers with what redis-rs needs.

use crate::error::StoreError;

/// The TLS settings of a builder.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(super) struct TlsOptions {
    /// PEM certificates that replace the system's roots.
    pub(super) root_certificate: Option<Vec<u8>>,
    /// Whether `connect` may install ring as rustls's process-wide provider.
    pub(super) install_ring_provider: bool,
}

#[cfg(feature = "tls")]
impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            root_certificate: None,
            install_ring_provider: true,
        }
    }
}

/// The certificates redis-rs should trust instead of the system's roots, if the app gave any.
#[cfg(feature = "tls")]
pub(super) fn root_certificates(tls: &TlsOptions) -> Option<redis::TlsCertificates> {
    tls.root_certificate.as_deref().map(certificates)
}

/// `pem` as redis-rs takes it: roots only, no client certificate.
#[cfg(feature = "tls")]
pub(super) fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Whether any of `urls` asks for TLS.
fn uses_tls(urls: &[String]) -> bool {
    urls.iter().any(|url| {
        url.get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    })
}

/// Refuses TLS settings that cannot mean what the app wants for `urls`, the URLs the store
/// dials first, and readies rustls for `rediss://`.
pub(super) fn prepare(
    urls: &[String],
    #[cfg(feature = "tls")] tls: &TlsOptions,
) -> Result<(), StoreError> {
    #[cfg(feature = "tls")]
    {
        if uses_tls(urls) {
            ensure_crypto_provider(tls.install_ring_provider)?;
        } else if tls.root_certificate.is_some() {
            // redis-rs would ignore it, or switch a cluster to TLS behind the URLs' back.
            return Err(StoreError::unavailable(
                "a TLS root certificate was given for plain-text URLs: use rediss://",
            ));
        }
        Ok(())
    }
    #[cfg(not(feature = "tls"))]
    {
        if uses_tls(urls) {
            return Err(StoreError::unavailable(
                "rediss:// URLs need the `tls` feature of actix-login",
            ));
        }
        Ok(())
    }
}

/// Makes sure rustls has a process-wide crypto provider before redis-rs asks for it: the app's,
/// or ring if `install` allows. rustls would otherwise pick one by itself only when exactly one
/// of its backends is compiled in, and panic at the first TLS connection when both are (another
/// dependency may enable aws-lc-rs).
#[cfg(feature = "tls")]
fn ensure_crypto_provider(install: bool) -> Result<(), StoreError> {
    if rustls::crypto::CryptoProvider::get_default().is_some() {
        return Ok(());
    }
    if !install {
        return Err(StoreError::unavailable(
            "rediss:// needs a rustls crypto provider: install one before connecting, \
             or allow RedisStoreBuilder::install_ring_provider",
        ));
    }
    // Losing a race to another installer is fine: either provider will do.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
    {
        tracing::info!("installed ring as rustls's process-wide crypto provider for rediss://");
    }
    Ok(())
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::ensure_crypto_provider;

    #[test]
    fn without_permission_the_store_installs_no_provider() {
        use rustls::crypto::CryptoProvider;
        // Nothing in this test binary installs one, but the check would be void if it did.
        if CryptoProvider::get_default().is_some() {
            return;
        }
        let err = ensure_crypto_provider(false).expect_err("connected without a provider");
        assert!(err.to_string().contains("install_ring_provider"), "{err}");
        assert!(CryptoProvider::get_default().is_none());
    }
}
