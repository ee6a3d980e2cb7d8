//! TLS on the public port and the admin listener: the certificate and key files, loaded and
//! checked, and the certificate that new handshakes get, which a reload swaps in one step.
//!
//! The handshake runs in each connection's own task (`http::conn::serve_tls`), under the
//! connection's header deadline. A reload changes only what the next handshake is given:
//! open connections keep the session they negotiated, and a reload that fails keeps the
//! certificate being served.

use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;

pub mod settings;

pub use self::settings::TlsConfig;
use crate::config::error::ConfigError;

/// Encrypted bytes rustls may hold for one connection, beyond what its outbox holds: one
/// full record. The WebSocket task hands rustls more plaintext only once these are sent,
/// and hyper's writes wait the same way, so a client that stops reading costs this much
/// more over TLS, not an unbounded buffer.
pub(crate) const BUFFER_LIMIT: usize = 16 * 1024;

/// Larger files are refused: a certificate chain is a few kilobytes, and a path mistyped
/// as `/dev/zero` must not be read forever.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a PEM file of at most [`MAX_FILE_BYTES`].
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("is larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

/// ring: already built for the webhook client's HTTPS, and it builds with no C toolchain
/// steps of its own beyond cc (aws-lc-rs needs cmake).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The config keys a listener's files come from, which its errors name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys {
    cert: &'static str,
    key: &'static str,
}

/// The public port's files.
pub(crate) const PUBLIC_KEYS: Keys = Keys {
    cert: "tls_cert",
    key: "tls_key",
};

/// The admin listener's files.
pub(crate) const ADMIN_KEYS: Keys = Keys {
    cert: "admin_tls_cert",
    key: "admin_tls_key",
};

/// Reads and checks the certificate chain and its key: both parse, and the key is the
/// certificate's. Every error names the file at fault and its key.
pub(crate) fn load(files: &TlsConfig, keys: Keys) -> Result<Arc<CertifiedKey>, ConfigError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let cert_error = |problem: String| ConfigError::Tls {
        field: keys.cert,
        path: cert_path.clone(),
        problem,
    };
    let key_error = |problem: String| ConfigError::Tls {
        field: keys.key,
        path: key_path.clone(),
        problem,
    };
    let cert_pem = read_pem(&files.cert).map_err(cert_error)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "holds no certificate (a PEM `BEGIN CERTIFICATE` block)".to_owned(),
        ));
    }
    let key_pem = read_pem(&files.key).map_err(key_error)?;
    // The parser's messages quote marker lines only, never the key's bytes.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            key_error("holds no private key (a PEM `BEGIN PRIVATE KEY` block)".to_owned())
        }
        e => key_error(format!("is not valid PEM: {e}")),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(format!("is not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(key_error(
            format!("does not match the certificate in {cert_path}"),
        )),
        Err(e) => Err(cert_error(format!(
            "holds a certificate that cannot be used: {e}"
        ))),
    }
}

/// The certificate handshakes are served with; one read lock and an `Arc` clone per
/// handshake, nothing per request.
struct Current(RwLock<Arc<CertifiedKey>>);

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// A listener's TLS: the acceptor every connection's handshake uses, and the certificate
/// it serves.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    keys: Keys,
}

impl Tls {
    /// Loads the files and builds the acceptor: TLS 1.3 and 1.2, ALPN `http/1.1` only (a
    /// WebSocket upgrade needs HTTP/1.1, and the server speaks nothing else).
    pub(crate) fn new(files: &TlsConfig) -> Result<Tls, ConfigError> {
        Tls::with_keys(files, PUBLIC_KEYS)
    }

    /// [`Tls::new`] for files that come from `keys` (the admin listener's).
    pub(crate) fn with_keys(files: &TlsConfig, keys: Keys) -> Result<Tls, ConfigError> {
        let current = Arc::new(Current(RwLock::new(load(files, keys)?)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls {
                field: keys.cert,
                path: files.cert.display().to_string(),
                problem: format!("cannot be served: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            keys,
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Loads `files` again and serves them from the next handshake on; connections already
    /// open are untouched. On failure the certificate being served stays, and one line
    /// naming the file is logged. Reads files: call it off the async runtime's threads.
    pub(crate) fn reload(&self, files: &TlsConfig) -> Result<(), ConfigError> {
        match load(files, self.keys) {
            Ok(certified) => {
                *self.current.0.write() = certified;
                tracing::info!(
                    field = self.keys.cert,
                    cert = %files.cert.display(),
                    "TLS certificate reloaded: new connections get it"
                );
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "TLS certificate not reloaded: the old one is still served");
                Err(error)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A certificate for `localhost` and 127.0.0.1, signed by a fresh CA: the CA's PEM,
    /// the leaf's PEM and its key's PEM.
    pub(crate) fn issue(common_name: &str) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf");
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A directory for a test's files, removed with them when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn temp_dir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("herald-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn served(tls: &Tls) -> Arc<CertifiedKey> {
        tls.current.0.read().clone()
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = temp_dir("errors");
        let (_, cert, key) = issue("a");
        let (_, _, other_key) = issue("b");
        let cert = write(&dir, "cert.pem", &cert);
        let key = write(&dir, "key.pem", &key);
        let other_key = write(&dir, "other.pem", &other_key);
        let garbage = write(&dir, "garbage.pem", "not a certificate\n");
        let missing = dir.join("missing.pem");
        let zero = PathBuf::from("/dev/zero");
        let files = |cert: &Path, key: &Path| TlsConfig {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        assert!(load(&files(&cert, &key), PUBLIC_KEYS).is_ok());
        // (cert, key, the field at fault, what is said about its file)
        for (cert, key, field, problem) in [
            (&missing, &key, "tls_cert", "cannot be read"),
            (&garbage, &key, "tls_cert", "no certificate"),
            (&cert, &missing, "tls_key", "cannot be read"),
            (&cert, &garbage, "tls_key", "no private key"),
            (&cert, &cert, "tls_key", "no private key"),
            (&cert, &other_key, "tls_key", "does not match"),
            (&zero, &key, "tls_cert", "larger than"),
        ] {
            let path = if field == "tls_cert" { cert } else { key };
            let error = load(&files(cert, key), PUBLIC_KEYS)
                .expect_err(problem)
                .to_string();
            assert!(
                error.contains(field)
                    && error.contains(&path.display().to_string())
                    && error.contains(problem),
                "{error}"
            );
        }
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_failed_one_keeps_it() {
        let dir = temp_dir("reload");
        let (_, cert_a, key_a) = issue("a");
        let (_, cert_b, key_b) = issue("b");
        let files = TlsConfig {
            cert: write(&dir, "cert.pem", &cert_a),
            key: write(&dir, "key.pem", &key_a),
        };
        let tls = Tls::with_keys(&files, ADMIN_KEYS).expect("served");
        let first = served(&tls);
        write(&dir, "cert.pem", &cert_b);
        write(&dir, "key.pem", &key_b);
        tls.reload(&files).expect("reloaded");
        let second = served(&tls);
        assert_ne!(first.cert, second.cert);
        // A key that does not match: refused, and the second certificate stays.
        write(&dir, "key.pem", &key_a);
        assert!(tls.reload(&files).is_err());
        assert_eq!(served(&tls).cert, second.cert);
    }
}
