//! A private certificate authority made with `openssl`, and TLS-only `redis-server`s.

use std::process::{Command, Stdio};

use super::process::{unique_dir, Guarded, TempDir};

/// A private CA and a certificate for `localhost` and 127.0.0.1 that it signed, made with
/// `openssl`.
pub struct TestCertificates {
    pub ca_cert: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    _dir: TempDir,
}

impl TestCertificates {
    pub fn generate() -> Self {
        let dir = unique_dir("tls");
        let path = |name: &str| dir.0.join(name);
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl not found: install it (apt-get install openssl)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run(&[
            &["req", "-x509", "-new", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=actix-login test CA",
            ],
        ]
        .concat());
        run(&[
            &["req", "-new", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            path("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("certificate extensions");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self {
            ca_cert: path("ca.crt"),
            server_cert: path("server.crt"),
            server_key: path("server.key"),
            _dir: dir,
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("CA certificate")
    }

    /// `redis-server` arguments that serve TLS only, on `port`, with this certificate.
    pub fn server_args(&self, port: u16) -> String {
        format!(
            "--port 0 --tls-port {port} --tls-cert-file {} --tls-key-file {} \
             --tls-ca-cert-file {} --tls-auth-clients no",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca_cert.display()
        )
    }
}

/// A `redis-server` that speaks TLS only, with a certificate from `certificates`' CA.
pub fn start_tls_server(certificates: &TestCertificates) -> Guarded {
    Guarded::spawn_on_free_port(|port| {
        format!(
            "redis-server --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
             --logfile '' {}",
            certificates.server_args(port)
        )
    })
}
