//! TLS to Redis: which certificates a link trusts and presents, read from files and read
//! again on demand ([`TlsStore::reload`]), so connections made after a rotation use the new
//! ones.
//!
//! The client's own rustls path does the handshake: its `TlsCertificates` carry the CA
//! bundle (in place of the built-in web roots) and the client certificate and key (mTLS).
//! The server's name is checked against its certificate unless the operator turned that
//! off ([`TlsFiles::skip_name_check`]); the chain is checked always.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, RedisResult, TlsCertificates};

/// Where one side's (the data nodes', or the sentinels') TLS material is. Paths only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// PEM CA certificates to trust instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Accept a certificate that does not name the server (its chain is still checked).
    pub skip_name_check: bool,
}

/// Why TLS files could not be used. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("a client certificate needs its key, and a key its certificate")]
    Unpaired,
}

impl TlsFiles {
    /// Reads and checks the files (each holds PEM of the expected kind).
    pub(crate) fn load(&self) -> Result<TlsCertificates, TlsError> {
        let root_cert = self
            .ca
            .as_deref()
            .map(|path| read_pem(path, "CERTIFICATE", "certificate"))
            .transpose()?;
        let client_tls = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_pem(cert, "CERTIFICATE", "certificate")?,
                client_key: read_pem(key, "PRIVATE KEY", "private key")?,
            }),
            _ => return Err(TlsError::Unpaired),
        };
        Ok(TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// `path`'s bytes, if they hold a PEM block whose label ends with `label` (`PRIVATE KEY`
/// covers PKCS#8, RSA and EC keys).
fn read_pem(path: &Path, label: &str, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    });
    if !found {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            what,
        });
    }
    Ok(bytes)
}

/// Whether two reads of the files gave the same bytes.
fn same(a: &TlsCertificates, b: &TlsCertificates) -> bool {
    let client = |c: &TlsCertificates| {
        c.client_tls
            .as_ref()
            .map(|t| (t.client_cert.clone(), t.client_key.clone()))
    };
    a.root_cert == b.root_cert && client(a) == client(b)
}

/// One side's TLS material as last read. Clones share it.
#[derive(Clone)]
pub(crate) struct TlsStore {
    shared: Arc<Shared>,
}

struct Shared {
    files: TlsFiles,
    current: parking_lot::RwLock<TlsCertificates>,
}

impl TlsStore {
    /// Reads `files` once; fails naming the file that cannot be used.
    pub(crate) fn open(files: &TlsFiles) -> Result<TlsStore, TlsError> {
        let current = files.load()?;
        Ok(TlsStore {
            shared: Arc::new(Shared {
                files: files.clone(),
                current: parking_lot::RwLock::new(current),
            }),
        })
    }

    /// The files' paths.
    pub(crate) fn files(&self) -> &TlsFiles {
        &self.shared.files
    }

    /// Reads the files again, and says whether they changed. On an error the material read
    /// before stays in use.
    pub(crate) fn reload(&self) -> Result<bool, TlsError> {
        let fresh = self.shared.files.load()?;
        let mut current = self.shared.current.write();
        let changed = !same(&current, &fresh);
        *current = fresh;
        Ok(changed)
    }

    /// The material to hand the cluster client, which takes it whole.
    pub(crate) fn certificates(&self) -> TlsCertificates {
        self.shared.current.read().clone()
    }

    /// `info` with this store's certificates, if it is a TLS address; as it is otherwise.
    pub(crate) fn apply(&self, info: ConnectionInfo) -> RedisResult<ConnectionInfo> {
        if !matches!(info.addr, ConnectionAddr::TcpTls { .. }) {
            return Ok(info);
        }
        let client = redis::Client::build_with_tls(info, self.certificates())?;
        let mut info = client.get_connection_info().clone();
        if self.shared.files.skip_name_check {
            info.addr.set_danger_accept_invalid_hostnames(true);
        }
        Ok(info)
    }
}

impl Default for TlsStore {
    /// No files: the built-in web roots, no client certificate, names checked.
    fn default() -> Self {
        TlsStore {
            shared: Arc::new(Shared {
                files: TlsFiles::default(),
                current: parking_lot::RwLock::new(TlsCertificates {
                    client_tls: None,
                    root_cert: None,
                }),
            }),
        }
    }
}

impl std::fmt::Debug for TlsStore {
    /// The paths only: the key's bytes never show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsStore").field(&self.shared.files).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_error(files: TlsFiles) -> TlsError {
        match files.load() {
            Ok(_) => panic!("{files:?} loaded"),
            Err(error) => error,
        }
    }

    #[test]
    fn files_are_checked_and_named_when_wrong() {
        let dir = std::env::temp_dir().join(format!("herald-link-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        let key = dir.join("key.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        )
        .expect("write");
        let files = TlsFiles {
            ca: Some(ca.clone()),
            ..TlsFiles::default()
        };
        assert!(files.load().is_ok());
        let error = load_error(TlsFiles {
            ca: Some(key.clone()),
            ..TlsFiles::default()
        });
        assert!(error.to_string().contains("key.pem"), "{error}");
        let error = load_error(TlsFiles {
            cert: Some(ca.clone()),
            ..TlsFiles::default()
        });
        assert!(matches!(error, TlsError::Unpaired), "{error}");
        let error = load_error(TlsFiles {
            ca: Some(dir.join("missing.pem")),
            ..TlsFiles::default()
        });
        assert!(error.to_string().contains("missing.pem"), "{error}");

        // A reload says whether the files changed, and keeps the old material on an error.
        let store = TlsStore::open(&files).expect("open");
        assert!(!store.reload().expect("same files"));
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n",
        )
        .expect("rewrite");
        assert!(store.reload().expect("rotated files"));
        std::fs::write(&ca, "gone").expect("break");
        assert!(store.reload().is_err());
        assert_eq!(
            store.certificates().root_cert.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n"[..])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
