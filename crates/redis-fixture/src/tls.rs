//! TLS for the fixtures: a throwaway certificate authority made with the `openssl` command
//! at test time ([`TestCa`]), and the files a TLS server is started with ([`TlsFiles`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::scratch::ScratchDir;

/// What a TLS server (or sentinel) is started with, as PEM files. The fixture's own
/// `redis-cli` calls use the same files: `ca` to check the server, `cert` and `key` as their
/// client certificate (the test CA's certificates serve both ends).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificates the server trusts for client certificates (and `redis-cli` for
    /// the server's): one CA or several concatenated.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// `tls-auth-clients yes`: a client must present a certificate from `ca` (mTLS).
    pub require_client_cert: bool,
}

impl TlsFiles {
    /// The `redis-server` arguments serving TLS only, on `port`, with TLS between the
    /// servers too (replication, the cluster bus).
    pub(crate) fn server_args(&self, port: u16) -> Vec<String> {
        let mut args = vec!["--port".to_owned(), "0".to_owned()];
        for (key, value) in self.directives(Some(port)) {
            args.push(format!("--{key}"));
            args.push(value);
        }
        args
    }

    /// `key value` pairs for a configuration file or arguments: the TLS port (if any), the
    /// files, and TLS to the other servers.
    pub(crate) fn directives(&self, port: Option<u16>) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(port) = port {
            pairs.push(("tls-port", port.to_string()));
        }
        pairs.extend([
            ("tls-cert-file", self.cert.display().to_string()),
            ("tls-key-file", self.key.display().to_string()),
            ("tls-ca-cert-file", self.ca.display().to_string()),
            (
                "tls-auth-clients",
                if self.require_client_cert {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
            ),
            ("tls-replication", "yes".to_owned()),
        ]);
        pairs
    }

    /// The `redis-cli` arguments that reach a server started with these files.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            self.ca.display().to_string(),
            "--cert".to_owned(),
            self.cert.display().to_string(),
            "--key".to_owned(),
            self.key.display().to_string(),
        ]
    }
}

/// `openssl req` arguments for a new P-256 key, unencrypted.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A certificate authority for one test, in a scratch directory removed when dropped.
pub struct TestCa {
    dir: ScratchDir,
    cert: PathBuf,
    key: PathBuf,
}

/// A certificate [`TestCa::issue`] made, and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (its common name), valid for two days.
    pub fn new(name: &str) -> TestCa {
        let dir = ScratchDir::new("ca");
        let config = dir.path().join("ca.cnf");
        std::fs::write(
            &config,
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {name}\n\
                 [ca]\nbasicConstraints = critical,CA:TRUE\n\
                 keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
            ),
        )
        .expect("write the CA's openssl configuration");
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        let (config, key_out, cert_out) = (
            config.display().to_string(),
            key.display().to_string(),
            cert.display().to_string(),
        );
        openssl(
            &[
                &["req", "-x509", "-config", &config, "-extensions", "ca"][..],
                &NEW_KEY,
                &["-days", "2", "-keyout", &key_out, "-out", &cert_out],
            ]
            .concat(),
        );
        TestCa { dir, cert, key }
    }

    /// The CA's certificate (PEM).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// A certificate for `names` (IP addresses or DNS names), usable by a server and by a
    /// client, signed by this CA; `file` names its files in the CA's directory.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        let config = self.dir.path().join(format!("{file}.cnf"));
        let alt: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {file}\n\
                 [leaf]\nbasicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {}\n",
                alt.join(",")
            ),
        )
        .expect("write a certificate's openssl configuration");
        let path = |ext: &str| self.dir.path().join(format!("{file}.{ext}"));
        let (cert, key, csr) = (path("crt"), path("key"), path("csr"));
        let (config_in, key_out, csr_out) = (
            config.display().to_string(),
            key.display().to_string(),
            csr.display().to_string(),
        );
        openssl(
            &[
                &["req", "-new", "-config", &config_in][..],
                &NEW_KEY,
                &["-keyout", &key_out, "-out", &csr_out],
            ]
            .concat(),
        );
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1000;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.display().to_string(),
            "-CA",
            &self.cert.display().to_string(),
            "-CAkey",
            &self.key.display().to_string(),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &config.display().to_string(),
            "-extensions",
            "leaf",
            "-out",
            &cert.display().to_string(),
        ]);
        Issued { cert, key }
    }

    /// Files for a server on loopback (its certificate names 127.0.0.1 and localhost)
    /// trusting this CA's client certificates.
    pub fn server_files(&self, require_client_cert: bool) -> TlsFiles {
        let issued = self.issue("server", &["127.0.0.1", "localhost"]);
        TlsFiles {
            ca: self.cert.clone(),
            cert: issued.cert,
            key: issued.key,
            require_client_cert,
        }
    }
}

/// Runs `openssl args...`; panics with its output if it fails.
fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::TestCa;

    #[test]
    fn a_test_ca_issues_certificates_it_verifies() {
        let ca = TestCa::new("fixture test CA");
        let issued = ca.issue("leaf", &["127.0.0.1", "redis.test"]);
        let output = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(ca.cert())
            .arg(&issued.cert)
            .output()
            .expect("run openssl verify");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let key = std::fs::read_to_string(&issued.key).expect("the key");
        assert!(key.contains("PRIVATE KEY"), "{key}");
    }
}
