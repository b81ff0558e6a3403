//! `rediss://`: the certificates the store trusts, and the checks made before it dials.

use super::builder::{RedisStoreBuilder, Target};
use crate::StoreError;

/// The TLS settings of a builder.
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
pub(super) struct TlsOptions {
    /// PEM certificates that replace the system's roots.
    root_certificate: Option<Vec<u8>>,
}

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
impl RedisStoreBuilder {
    /// Trusts the certificate authority in `pem` (one or more PEM certificates) for `rediss://`
    /// connections, instead of the system's roots: for servers whose certificates come from a
    /// private CA. The server's host name is still verified, so there is no need for
    /// `#insecure`.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificate = Some(pem.into());
        self
    }
}

/// The certificates redis-rs should trust instead of the system's roots, if the app gave any.
#[cfg(feature = "tls")]
pub(super) fn root_certificates(builder: &RedisStoreBuilder) -> Option<redis::TlsCertificates> {
    builder.tls.root_certificate.as_deref().map(certificates)
}

/// `pem` as redis-rs takes it: roots only, no client certificate.
#[cfg(feature = "tls")]
pub(super) fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Whether any URL of `target` asks for TLS.
fn uses_tls(target: &Target) -> bool {
    target.urls().iter().any(|url| {
        url.get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    })
}

/// Refuses TLS settings that cannot mean what the app wants, and readies rustls for `rediss://`.
pub(super) fn prepare(builder: &RedisStoreBuilder) -> Result<(), StoreError> {
    #[cfg(feature = "tls")]
    {
        if uses_tls(&builder.target) {
            install_crypto_provider();
        } else if builder.tls.root_certificate.is_some() {
            // redis-rs would ignore it, or switch a cluster to TLS behind the URLs' back.
            return Err(StoreError::unavailable(
                "a TLS root certificate was given for plain-text URLs: use rediss://",
            ));
        }
        Ok(())
    }
    #[cfg(not(feature = "tls"))]
    {
        if uses_tls(&builder.target) {
            return Err(StoreError::unavailable(
                "rediss:// URLs need the `tls` feature of actix-login",
            ));
        }
        Ok(())
    }
}

/// Makes ring rustls's process-wide crypto provider unless the app chose one. rustls picks a
/// provider by itself only when exactly one of its backends is compiled in; with both (another
/// dependency may enable aws-lc-rs) it would panic at the first TLS connection instead.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: either provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
