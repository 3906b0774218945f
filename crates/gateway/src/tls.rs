//! TLS on the two listeners (`server.tls: {cert_file, key_file}`).
//!
//! The files are read and checked when the config is validated (so `asc check-config`
//! and a reload refuse a missing file, a file with no certificate, a key that is not a
//! key or does not match the certificate), and the built `rustls::ServerConfig` travels
//! with the config generation. Each accepted connection takes the current generation's,
//! so rotating a certificate is: replace the files, then `SIGHUP` or
//! `POST /admin/v1/config/reload`; connections already open keep the one they started
//! with. ALPN offers `h2` and `http/1.1`.
//!
//! Errors name the file and what is wrong with it, never its bytes: a key file's content
//! is a secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The `server.tls` files and the server config built from them.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// What is wrong with a `server.tls` file; `field` is `cert_file` or `key_file`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub field: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Reads the certificate chain and key, and builds the listeners' server config.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<TlsSettings, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::new(
                "key_file",
                format!(
                    "`{}` cannot serve `{}`: {e}",
                    key_file.display(),
                    cert_file.display()
                ),
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSettings {
        cert_file: cert_file.to_owned(),
        key_file: key_file.to_owned(),
        server: Arc::new(server),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| TlsError::new("cert_file", format!("`{shown}`: {}", pem_reason(&e))))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            "cert_file",
            format!("`{shown}` holds no PEM certificate"),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::new(
            "key_file",
            format!("`{shown}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
        ),
        e => TlsError::new("key_file", format!("`{shown}`: {}", pem_reason(&e))),
    })
}

/// The reason, without the file's bytes (a base64 error can quote them).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => format!("cannot read it: {io}"),
        pem::Error::NoItemsFound => "no PEM section in it".to_owned(),
        _ => "not valid PEM".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_load_with_alpn() {
        let dir = tempdir();
        let (cert, key) = pair(&["localhost"]);
        let c = write(&dir, "cert.pem", &cert);
        let k = write(&dir, "key.pem", &key);
        let s = load(&c, &k).unwrap();
        assert_eq!(
            s.server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(s.cert_file, c);
        let shown = format!("{s:?}");
        assert!(shown.contains("cert.pem") && !shown.contains("PRIVATE"));
    }

    #[test]
    fn each_broken_file_is_named_and_its_bytes_are_never_quoted() {
        let dir = tempdir();
        let (cert, key) = pair(&["localhost"]);
        let (_, other_key) = pair(&["elsewhere"]);
        let c = write(&dir, "cert.pem", &cert);
        let k = write(&dir, "key.pem", &key);
        let other = write(&dir, "other.pem", &other_key);
        let empty = write(&dir, "empty.pem", "");
        let garbage = write(
            &dir,
            "garbage.pem",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0!!!\n-----END PRIVATE KEY-----\n",
        );
        let missing = dir.join("missing.pem");
        let cases: [(&Path, &Path, &str, &str); 6] = [
            (&missing, &k, "cert_file", "cannot read"),
            (&empty, &k, "cert_file", "no PEM certificate"),
            (&k, &k, "cert_file", "no PEM certificate"),
            (&c, &c, "key_file", "no PEM private key"),
            (&c, &garbage, "key_file", "not valid PEM"),
            (&c, &other, "key_file", "cannot serve"),
        ];
        for (cert_file, key_file, field, says) in cases {
            let e = load(cert_file, key_file).unwrap_err();
            assert_eq!(e.field, field, "{cert_file:?} {key_file:?}: {e}");
            assert!(e.message.contains(says), "{e}");
            assert!(!e.message.contains("c2VjcmV0"), "{e}");
            assert!(!e.message.contains("BEGIN"), "{e}");
        }
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("asc-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
