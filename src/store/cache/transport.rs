//! The tracking connection's byte stream: plain TCP, or TLS over it, and what "nothing is
//! waiting" means on each.
//!
//! On plain TCP every byte Redis sent is either in the socket, where a `peek` sees it, or has
//! been read through the scanner. TLS adds two places where bytes can hide from a peek:
//!
//! * **decrypted plaintext that rustls holds** and has not handed on. The reader therefore
//!   drains the TLS stream, through the scanner, until it reports `Pending` (rustls has no
//!   plaintext left and the socket is empty), keeping what the parser has not asked for yet in
//!   a buffer of its own: those bytes are scanned, so they hide nothing;
//! * **a TLS record that has only partly arrived**, whose first bytes rustls has taken off the
//!   socket and cannot decrypt yet. [`RecordTap`] follows the record boundaries of the raw
//!   bytes read, so the stream is at rest only between records, as the scanner is only idle
//!   between frames.
//!
//! A lookup answers from memory only when the socket is empty, the last drain ended in
//! `Pending` and the raw stream is between records: then every byte that has arrived went
//! through the scanner.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How the tracking connection reaches its server.
pub(super) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<RecordTap>>),
}

/// What one read of a [`Stream`] gave.
pub(super) enum Read {
    /// Bytes, in `buf`.
    Data,
    /// End of stream.
    Closed,
}

impl Stream {
    /// One read into `buf`: decrypted bytes on TLS.
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<Read>> {
        let before = buf.filled().len();
        match self {
            Stream::Plain(tcp) => match Pin::new(tcp).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => {
                    Poll::Ready(Ok(Read::Closed))
                }
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Read::Data)),
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            },
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => match Pin::new(&mut **tls).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => {
                    Poll::Ready(Ok(Read::Closed))
                }
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Read::Data)),
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// Whether bytes can hide between the socket and the reader: true on TLS.
    pub(super) fn buffers(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(_) => true,
        }
    }

    /// On TLS, whether the raw bytes read so far end on a record boundary; always true on TCP.
    pub(super) fn between_records(&self) -> bool {
        match self {
            Stream::Plain(_) => true,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.get_ref().0.between_records(),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

#[cfg(feature = "tls")]
/// A TCP stream under TLS that follows the record boundaries of what it reads.
pub(super) struct RecordTap {
    tcp: TcpStream,
    framing: RecordFraming,
}

#[cfg(feature = "tls")]
impl RecordTap {
    pub(super) fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            framing: RecordFraming::default(),
        }
    }

    fn between_records(&self) -> bool {
        self.framing.between_records()
    }
}

#[cfg(feature = "tls")]
/// Where the raw bytes of a TLS connection stand: how much of a record's 5-byte header has
/// been read, then how much of its body is still to come.
#[derive(Default)]
struct RecordFraming {
    header: [u8; 5],
    header_read: usize,
    body_left: usize,
}

#[cfg(feature = "tls")]
impl RecordFraming {
    fn between_records(&self) -> bool {
        self.header_read == 0 && self.body_left == 0
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.header_read).min(bytes.len());
            self.header[self.header_read..self.header_read + take].copy_from_slice(&bytes[..take]);
            self.header_read += take;
            bytes = &bytes[take..];
            if self.header_read == 5 {
                self.header_read = 0;
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }
}

#[cfg(feature = "tls")]
impl AsyncRead for RecordTap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.framing.advance(&buf.filled()[before..]);
        }
        polled
    }
}

#[cfg(feature = "tls")]
impl AsyncWrite for RecordTap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The TLS client of tracking connections: the app's roots, or the system's.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: tokio_rustls::TlsConnector,
}

#[cfg(feature = "tls")]
impl TlsClient {
    /// Trusts the PEM certificates in `root_pem`, or the system's roots without them. Needs
    /// rustls's process-wide crypto provider, which the store installs before it dials.
    pub(crate) fn new(root_pem: Option<&[u8]>) -> Result<Self, crate::error::StoreError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;

        use crate::error::StoreError;

        let mut roots = rustls::RootCertStore::empty();
        match root_pem {
            Some(pem) => {
                for certificate in CertificateDer::pem_slice_iter(pem) {
                    let certificate = certificate.map_err(|_| {
                        StoreError::unavailable("the TLS root certificate is not valid PEM")
                    })?;
                    roots.add(certificate).map_err(StoreError::unavailable)?;
                }
            }
            None => {
                for certificate in rustls_native_certs::load_native_certs().certs {
                    // One unreadable system root must not stop the others.
                    let _ = roots.add(certificate);
                }
            }
        }
        if roots.is_empty() {
            return Err(StoreError::unavailable(
                "no TLS root certificate to verify Redis with",
            ));
        }
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .ok_or_else(|| StoreError::unavailable("no rustls crypto provider is installed"))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(StoreError::unavailable)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        })
    }

    /// Opens TLS on `tcp` to `host`, whose certificate must name it.
    pub(super) async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<Stream> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a TLS server name"))?;
        let tls = self.connector.connect(name, RecordTap::new(tcp)).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// Without the `tls` feature no tracking connection uses TLS: a client that cannot exist.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub(crate) enum TlsClient {}

#[cfg(not(feature = "tls"))]
impl TlsClient {
    pub(super) async fn connect(&self, _host: &str, _tcp: TcpStream) -> io::Result<Stream> {
        match *self {}
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::RecordFraming;

    #[test]
    fn record_boundaries_are_followed_across_any_split() {
        // Two records: 3 and 0 bytes of body.
        let stream = [23u8, 3, 3, 0, 3, 1, 2, 3, 23, 3, 3, 0, 0];
        for cut in 0..=stream.len() {
            let mut framing = RecordFraming::default();
            framing.advance(&stream[..cut]);
            let boundary = matches!(cut, 0 | 8 | 13);
            assert_eq!(framing.between_records(), boundary, "cut at {cut}");
            framing.advance(&stream[cut..]);
            assert!(framing.between_records());
        }
    }
}
