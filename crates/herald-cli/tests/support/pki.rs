//! A private CA made at test time, and the directory its certificates are written to: for
//! the public port's TLS (`tls.rs`) and for the app database's (`app_db_tls.rs`).

use std::path::PathBuf;

/// A private CA, and the directory its certificates are written to (removed when dropped).
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate signed by the CA: its PEM, its key's PEM, and its DER, which is what a
/// client is shown.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("herald-tls-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Herald test CA {name}"));
        let ca = params.self_signed(&key).expect("CA certificate");
        let pki = Pki {
            dir,
            ca_pem: ca.pem(),
            issuer: rcgen::Issuer::new(params, key),
        };
        pki.write("ca.pem", &pki.ca_pem);
        pki
    }

    /// A certificate for `localhost` and 127.0.0.1.
    pub fn leaf(&self, common_name: &str) -> Leaf {
        self.leaf_for(common_name, true)
    }

    /// A certificate for `localhost`, and for 127.0.0.1 too if `with_ip`.
    pub fn leaf_for(&self, common_name: &str, with_ip: bool) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        if with_ip {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
