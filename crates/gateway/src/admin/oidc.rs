//! OIDC JWT verification for the admin plane (contract section 3).
//!
//! A bearer token that looks like a JWT is verified against the issuer's JWKS: the
//! algorithm is allow-listed (RS256, ES256, EdDSA) before any key is looked up, the key
//! must be of the header's type, and `iss`, `aud`, `exp` and `nbf` are checked with a
//! 30 s leeway. The role claim is mapped through `admin.oidc.roles`; a token whose claim
//! maps to no role is refused. Tokens are never logged.
//!
//! The key set is held in an [`ArcSwap`], so verification reads never wait on a lock.
//! A `kid` that is not in the cache triggers a refetch, at most once a minute; the
//! refetch runs under a mutex, so concurrent verifications do not stampede the issuer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::principal::{Principal, Role};
use crate::config::raw::OidcRaw;

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_S: u64 = 30;
/// Minimum time between two JWKS fetches.
const MIN_REFRESH: Duration = Duration::from_secs(60);
/// A cached key set older than this is refetched (so removed keys stop verifying).
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1 << 20;
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Smallest accepted RSA modulus, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Why a JWT was refused.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm refused: {0}")]
    Algorithm(String),
    #[error("no matching signing key")]
    UnknownKey,
    #[error("invalid signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("missing or invalid claim `{0}`")]
    Claim(String),
    #[error("no role claim value maps to a role")]
    NoRole,
    #[error("jwks: {0}")]
    Jwks(String),
}

/// One usable verification key from the JWKS.
struct KeyEntry {
    kid: Option<String>,
    /// The only algorithm this key verifies.
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<KeyEntry>,
    /// When this set was fetched; `None` for the empty set before the first fetch.
    fetched: Option<Instant>,
}

impl KeySet {
    /// The key for a token with this (allow-listed) algorithm and `kid`.
    fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&DecodingKey, OidcError> {
        match kid {
            Some(kid) => {
                let entry = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(OidcError::UnknownKey)?;
                if entry.alg != alg {
                    return Err(OidcError::Algorithm(format!(
                        "{alg:?} token for a {:?} key",
                        entry.alg
                    )));
                }
                Ok(&entry.key)
            }
            None => {
                let mut matching = self.keys.iter().filter(|k| k.alg == alg);
                match (matching.next(), matching.next()) {
                    (Some(entry), None) => Ok(&entry.key),
                    _ => Err(OidcError::UnknownKey),
                }
            }
        }
    }

    fn is_stale(&self) -> bool {
        self.fetched.is_some_and(|t| t.elapsed() > MAX_KEY_AGE)
    }
}

/// OIDC settings, the shared HTTP client and the JWKS cache.
pub struct Oidc {
    issuer: String,
    audience: String,
    jwks_url: String,
    role_claim: String,
    roles: BTreeMap<String, Role>,
    tenant_claim: Option<String>,
    http: reqwest::Client,
    keys: ArcSwap<KeySet>,
    /// Time of the last JWKS fetch attempt; held only while refreshing.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("keys", &self.keys.load().keys.len())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Oidc {
    /// From the validated raw settings; `http` is the shared reqwest client.
    pub fn new(raw: &OidcRaw, http: reqwest::Client) -> Self {
        let mut roles = BTreeMap::new();
        for (claim, role) in &raw.roles {
            match Role::parse(role) {
                Some(r) => {
                    roles.insert(claim.clone(), r);
                }
                None => tracing::warn!(claim = %claim, role = %role, "oidc: unknown role ignored"),
            }
        }
        Self {
            issuer: raw.issuer.clone(),
            audience: raw.audience.clone(),
            jwks_url: raw.jwks_url.clone(),
            role_claim: raw
                .role_claim
                .clone()
                .unwrap_or_else(|| "groups".to_owned()),
            roles,
            tenant_claim: raw.tenant_claim.clone(),
            http,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Verifies a JWT and maps it to a Principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, OidcError> {
        let header = parse_header(token)?;
        // Allow-list first: `none` and every HMAC never reach a key lookup.
        let alg = allowed_algorithm(&header.alg)?;
        let kid = header.kid.as_deref();

        let mut set = self.keys.load_full();
        if set.is_stale() {
            // Failure keeps the cached keys; the error is logged by `refresh`.
            let _ = self.refresh(&set).await;
            set = self.keys.load_full();
        }
        let claims = match set.select(alg, kid) {
            Ok(key) => self.decode(token, alg, key)?,
            Err(OidcError::UnknownKey) => {
                let fetch_err = self.refresh(&set).await.err();
                let set = self.keys.load_full();
                match set.select(alg, kid) {
                    Ok(key) => self.decode(token, alg, key)?,
                    Err(OidcError::UnknownKey) => {
                        return Err(fetch_err.unwrap_or(OidcError::UnknownKey));
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.principal(&claims)
    }

    fn decode(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<Map<String, Value>, OidcError> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }

    /// Refetches the JWKS unless another task just did, or the last fetch was less than
    /// [`MIN_REFRESH`] ago. `seen` is the key set the caller looked in.
    async fn refresh(&self, seen: &Arc<KeySet>) -> Result<(), OidcError> {
        let mut last = self.last_fetch.lock().await;
        if !Arc::ptr_eq(&self.keys.load(), seen) {
            return Ok(()); // refreshed by another task while we waited
        }
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "oidc: jwks refreshed");
                self.keys.store(Arc::new(KeySet {
                    keys,
                    fetched: Some(Instant::now()),
                }));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %self.jwks_url, "oidc: jwks fetch failed");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<KeyEntry>, OidcError> {
        let err = |e: reqwest::Error| OidcError::Jwks(e.without_url().to_string());
        let resp = self
            .http
            .get(&self.jwks_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(err)?;
        if !resp.status().is_success() {
            return Err(OidcError::Jwks(format!("status {}", resp.status())));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(OidcError::Jwks("document too large".into()));
        }
        let body = resp.bytes().await.map_err(err)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(OidcError::Jwks("document too large".into()));
        }
        parse_jwks(&body)
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, OidcError> {
        let role = strings(claims.get(&self.role_claim))
            .into_iter()
            .filter_map(|v| self.roles.get(v).copied())
            .max_by_key(|r| r.rank())
            .ok_or(OidcError::NoRole)?;
        let tenants = match (role, &self.tenant_claim) {
            (Role::TenantAdmin | Role::Viewer, Some(claim)) => {
                let mut t: Vec<String> = strings(claims.get(claim))
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                t.sort();
                t.dedup();
                t
            }
            _ => Vec::new(),
        };
        let nonempty_str = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let who = nonempty_str("email")
            .or_else(|| nonempty_str("sub"))
            .ok_or_else(|| OidcError::Claim("sub".into()))?;
        Ok(Principal {
            actor: format!("oidc:{who}"),
            role,
            tenants,
            via: "oidc",
        })
    }
}

/// Cheap check used by the auth layer to decide static token vs JWT: three base64url segments.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut segments = 0;
    for seg in token.split('.') {
        segments += 1;
        if segments > 3 || seg.is_empty() || !seg.bytes().all(is_b64url) {
            return false;
        }
    }
    segments == 3
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Splits and decodes the JOSE header, without trusting anything in it yet.
fn parse_header(token: &str) -> Result<JoseHeader, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed);
    };
    if header.is_empty()
        || payload.is_empty()
        || ![header, payload, signature]
            .iter()
            .all(|s| s.bytes().all(is_b64url))
    {
        return Err(OidcError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| OidcError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| OidcError::Malformed)
}

fn allowed_algorithm(alg: &str) -> Result<Algorithm, OidcError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(OidcError::Algorithm(other.chars().take(16).collect())),
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> OidcError {
    match e.kind() {
        ErrorKind::InvalidSignature => OidcError::Signature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidIssuer => OidcError::Issuer,
        ErrorKind::InvalidAudience => OidcError::Audience,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => match c.as_str() {
            "iss" => OidcError::Issuer,
            "aud" => OidcError::Audience,
            _ => OidcError::Claim(c.clone()),
        },
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => OidcError::Algorithm("refused by verifier".into()),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => OidcError::Jwks("unusable key".into()),
        _ => OidcError::Malformed,
    }
}

/// A claim holding a string or an array of strings (other array items are ignored).
fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Parses a JWKS document, keeping only keys usable with the allowed algorithms.
fn parse_jwks(body: &[u8]) -> Result<Vec<KeyEntry>, OidcError> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<Value>,
    }
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|e| OidcError::Jwks(format!("invalid document: {e}")))?;
    let keys: Vec<KeyEntry> = doc
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| key_entry(&jwk))
        .collect();
    if keys.is_empty() {
        tracing::warn!("oidc: jwks holds no usable RS256, ES256 or EdDSA key");
    }
    Ok(keys)
}

fn key_entry(jwk: &Jwk) -> Option<KeyEntry> {
    if !matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) {
        return None;
    }
    let decoded_len = |s: &str| URL_SAFE_NO_PAD.decode(s).ok().map(|b| b.len());
    let (alg, key_alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD.decode(&p.n).ok()?;
            let bits_len = n.iter().skip_while(|b| **b == 0).count();
            if bits_len < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            (
                Algorithm::RS256,
                KeyAlgorithm::RS256,
                DecodingKey::from_rsa_components(&p.n, &p.e).ok()?,
            )
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            if decoded_len(&p.x) != Some(32) || decoded_len(&p.y) != Some(32) {
                return None;
            }
            (
                Algorithm::ES256,
                KeyAlgorithm::ES256,
                DecodingKey::from_ec_components(&p.x, &p.y).ok()?,
            )
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            if decoded_len(&p.x) != Some(32) {
                return None;
            }
            (
                Algorithm::EdDSA,
                KeyAlgorithm::EdDSA,
                DecodingKey::from_ed_components(&p.x).ok()?,
            )
        }
        // Symmetric (`oct`) keys and other curves are never used.
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != key_alg) {
        return None;
    }
    Some(KeyEntry {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};

    use axum::Json;
    use axum::routing::get;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const ISS: &str = "https://sso.example.test";

    /// rand_core 0.10 adapter over the workspace's rand 0.9 thread RNG (tests only).
    struct TestRng;
    impl rsa::rand_core::TryRng for TestRng {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            Ok(rand::random())
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            Ok(rand::random())
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            rand::fill(dst);
            Ok(())
        }
    }
    impl rsa::rand_core::TryCryptoRng for TestRng {}

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct TestKey {
        kid: &'static str,
        alg: Algorithm,
        enc: EncodingKey,
        jwk: Value,
    }

    fn ed_key(kid: &'static str) -> TestKey {
        let seed: [u8; 32] = rand::random();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let x = b64(&signing.verifying_key().to_bytes());
        TestKey {
            kid,
            alg: Algorithm::EdDSA,
            enc: EncodingKey::from_ed_der(&der),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}),
        }
    }

    fn ec_key(kid: &'static str) -> TestKey {
        use p256::elliptic_curve::Generate;
        use p256::pkcs8::EncodePrivateKey;
        let signing = p256::ecdsa::SigningKey::generate_from_rng(&mut TestRng);
        let der = signing.to_pkcs8_der().unwrap();
        let point = signing.verifying_key().to_sec1_point(false);
        let (x, y) = (b64(point.x().unwrap()), b64(point.y().unwrap()));
        TestKey {
            kid,
            alg: Algorithm::ES256,
            enc: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid}),
        }
    }

    /// RSA-2048 key and its public key as PEM (for the HMAC confusion attack).
    fn rsa_key() -> &'static (TestKey, String) {
        static KEY: OnceLock<(TestKey, String)> = OnceLock::new();
        KEY.get_or_init(|| {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePublicKey;
            use rsa::traits::PublicKeyParts;
            let private = rsa::PrivateKey::new(&mut TestRng, 2048).unwrap();
            let public = private.to_public_key();
            let spki = public.to_public_key_der().unwrap();
            let body = base64::engine::general_purpose::STANDARD.encode(spki.as_bytes());
            let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
            let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
            let key = TestKey {
                kid: "rsa-1",
                alg: Algorithm::RS256,
                enc: EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes()),
                jwk: json!({"kty": "RSA", "n": b64(&public.n_bytes()), "e": b64(&public.e_bytes()), "kid": "rsa-1", "alg": "RS256"}),
            };
            (key, pem)
        })
    }

    struct Keys {
        ed: TestKey,
        ec: TestKey,
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys {
            ed: ed_key("ed-1"),
            ec: ec_key("ec-1"),
        })
    }

    fn jwks_of(keys: &[&TestKey]) -> Value {
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    struct Idp {
        url: String,
        jwks: Arc<Mutex<Value>>,
        fetches: Arc<AtomicUsize>,
    }

    impl Idp {
        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    async fn idp(jwks: Value) -> Idp {
        let doc = Arc::new(Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (d, f) = (doc.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            get(move || {
                let (d, f) = (d.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    Json(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Idp {
            url: format!("http://{addr}/jwks"),
            jwks: doc,
            fetches,
        }
    }

    fn oidc(idp: &Idp) -> Oidc {
        let roles = [
            ("asc-admins", "platform_admin"),
            ("asc-auditors", "auditor"),
            ("asc-tenant-admins", "tenant_admin"),
            ("asc-viewers", "viewer"),
        ];
        let raw = OidcRaw {
            issuer: ISS.into(),
            audience: "asc".into(),
            jwks_url: idp.url.clone(),
            role_claim: None,
            roles: roles
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tenant_claim: Some("tenants".into()),
        };
        Oidc::new(&raw, reqwest::Client::new())
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"iss": ISS, "aud": "asc", "sub": "u-1", "exp": now() + 300, "groups": ["asc-viewers"]});
        if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
            c.extend(extra);
        }
        c
    }

    fn sign_kid(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key.enc).unwrap()
    }

    fn sign(key: &TestKey, claims: &Value) -> String {
        sign_kid(key, Some(key.kid), claims)
    }

    fn all_jwks() -> Value {
        jwks_of(&[&rsa_key().0, &keys().ec, &keys().ed])
    }

    /// Lets the next unknown-kid lookup refetch, as if a minute had passed.
    async fn age_last_fetch(o: &Oidc) {
        *o.last_fetch.lock().await =
            Instant::now().checked_sub(MIN_REFRESH + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn valid_tokens_for_each_algorithm() {
        let idp = idp(all_jwks()).await;
        let o = oidc(&idp);

        let rs = sign(
            &rsa_key().0,
            &claims(
                json!({"email": "alice@example.com", "groups": ["asc-viewers", "asc-admins"], "tenants": ["research"]}),
            ),
        );
        let p = o.verify(&rs).await.unwrap();
        assert_eq!(
            p,
            Principal {
                actor: "oidc:alice@example.com".into(),
                role: Role::PlatformAdmin,
                tenants: vec![],
                via: "oidc"
            }
        );

        let es = sign(
            &keys().ec,
            &claims(
                json!({"groups": ["asc-viewers", "asc-tenant-admins", "other"], "tenants": ["research", "ops"]}),
            ),
        );
        let p = o.verify(&es).await.unwrap();
        assert_eq!(p.actor, "oidc:u-1");
        assert_eq!(p.role, Role::TenantAdmin);
        assert_eq!(p.tenants, vec!["ops".to_owned(), "research".to_owned()]);

        let ed = sign(
            &keys().ed,
            &claims(json!({"groups": "asc-auditors", "aud": ["other", "asc"]})),
        );
        assert_eq!(o.verify(&ed).await.unwrap().role, Role::Auditor);

        let viewer = sign(&keys().ed, &claims(json!({"tenants": "research"})));
        let p = o.verify(&viewer).await.unwrap();
        assert_eq!(
            (p.role, p.tenants),
            (Role::Viewer, vec!["research".to_owned()])
        );
        assert_eq!(idp.fetches(), 1, "one cold fetch, then the cache");
    }

    #[tokio::test]
    async fn time_issuer_and_audience_checks() {
        let idp = idp(all_jwks()).await;
        let o = oidc(&idp);
        let k = &keys().ed;
        let check = |extra: Value| {
            let t = sign(k, &claims(extra));
            let o = &o;
            async move { o.verify(&t).await }
        };
        assert!(matches!(
            check(json!({"exp": now() - 120})).await,
            Err(OidcError::Expired)
        ));
        assert!(
            check(json!({"exp": now() - 10})).await.is_ok(),
            "within leeway"
        );
        assert!(matches!(
            check(json!({"nbf": now() + 300})).await,
            Err(OidcError::NotYetValid)
        ));
        assert!(
            check(json!({"nbf": now() + 10})).await.is_ok(),
            "within leeway"
        );
        assert!(matches!(
            check(json!({"iss": "https://evil.example"})).await,
            Err(OidcError::Issuer)
        ));
        assert!(matches!(
            check(json!({"aud": "other"})).await,
            Err(OidcError::Audience)
        ));
        assert!(matches!(
            check(json!({"aud": ["other", "more"]})).await,
            Err(OidcError::Audience)
        ));
        assert!(check(json!({"aud": ["other", "asc"]})).await.is_ok());

        let mut no_exp = claims(json!({}));
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(
            matches!(o.verify(&sign(k, &no_exp)).await, Err(OidcError::Claim(c)) if c == "exp")
        );
        let mut no_aud = claims(json!({}));
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(matches!(
            o.verify(&sign(k, &no_aud)).await,
            Err(OidcError::Audience)
        ));
    }

    #[tokio::test]
    async fn wrong_key_and_algorithm_attacks() {
        let idp = idp(all_jwks()).await;
        let o = oidc(&idp);
        let c = claims(json!({"groups": ["asc-admins"]}));

        // `alg: none`, hand-built, and the HMAC-with-the-public-key confusion: refused
        // before any key lookup (no JWKS fetch happened).
        for alg in ["none", "None", "HS256"] {
            let header = b64(json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"})
                .to_string()
                .as_bytes());
            let t = format!("{header}.{}.", b64(c.to_string().as_bytes()));
            assert!(
                matches!(o.verify(&t).await, Err(OidcError::Algorithm(_))),
                "{alg}"
            );
        }
        let hmac = EncodingKey::from_secret(rsa_key().1.as_bytes()).unwrap();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut h = Header::new(alg);
            h.kid = Some("rsa-1".into());
            let t = encode(&h, &c, &hmac).unwrap();
            assert!(matches!(o.verify(&t).await, Err(OidcError::Algorithm(_))));
        }
        let ps = {
            let mut h = Header::new(Algorithm::PS256);
            h.kid = Some("rsa-1".into());
            encode(&h, &c, &rsa_key().0.enc).unwrap()
        };
        assert!(matches!(o.verify(&ps).await, Err(OidcError::Algorithm(_))));
        assert_eq!(idp.fetches(), 0);

        // Another key under a known kid.
        let impostor = ed_key("ed-1");
        assert!(matches!(
            o.verify(&sign(&impostor, &c)).await,
            Err(OidcError::Signature)
        ));
        // The header's alg must match the key's type.
        let es_with_rsa_kid = sign_kid(&keys().ec, Some("rsa-1"), &c);
        assert!(matches!(
            o.verify(&es_with_rsa_kid).await,
            Err(OidcError::Algorithm(_))
        ));
        let ed_with_ec_kid = sign_kid(&keys().ed, Some("ec-1"), &c);
        assert!(matches!(
            o.verify(&ed_with_ec_kid).await,
            Err(OidcError::Algorithm(_))
        ));
        // Tampered payload.
        let good = sign(&keys().ed, &c);
        let parts: Vec<&str> = good.split('.').collect();
        let forged = b64(claims(json!({"groups": ["asc-admins"], "sub": "mallory"}))
            .to_string()
            .as_bytes());
        let t = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert!(matches!(o.verify(&t).await, Err(OidcError::Signature)));
        assert!(o.verify(&good).await.is_ok());
    }

    #[tokio::test]
    async fn tokens_without_kid() {
        let other_ed = ed_key("ed-2");
        let idp = idp(jwks_of(&[&rsa_key().0, &keys().ed, &keys().ec])).await;
        let o = oidc(&idp);
        let c = claims(json!({}));
        assert!(
            o.verify(&sign_kid(&keys().ed, None, &c)).await.is_ok(),
            "exactly one Ed25519 key"
        );
        assert!(
            o.verify(&sign_kid(&keys().ec, None, &c)).await.is_ok(),
            "exactly one P-256 key"
        );

        *idp.jwks.lock().unwrap() = jwks_of(&[&keys().ed, &other_ed]);
        age_last_fetch(&o).await;
        let ghost = sign_kid(&keys().ed, Some("ghost"), &c);
        assert!(matches!(o.verify(&ghost).await, Err(OidcError::UnknownKey)));
        assert_eq!(idp.fetches(), 2);
        let rs = sign_kid(&rsa_key().0, None, &c);
        assert!(
            matches!(o.verify(&rs).await, Err(OidcError::UnknownKey)),
            "no RSA key left"
        );
        let ed = sign_kid(&keys().ed, None, &c);
        assert!(
            matches!(o.verify(&ed).await, Err(OidcError::UnknownKey)),
            "ambiguous"
        );
        assert!(o.verify(&sign(&other_ed, &c)).await.is_ok());
        assert_eq!(idp.fetches(), 2);
    }

    #[tokio::test]
    async fn unknown_kid_refetch_is_rate_limited_and_picks_up_rotation() {
        let idp = idp(jwks_of(&[&keys().ed])).await;
        let o = oidc(&idp);
        let c = claims(json!({}));
        assert!(o.verify(&sign(&keys().ed, &c)).await.is_ok());
        assert_eq!(idp.fetches(), 1);

        age_last_fetch(&o).await;
        let ghost = sign_kid(&keys().ed, Some("ghost-1"), &c);
        assert!(matches!(o.verify(&ghost).await, Err(OidcError::UnknownKey)));
        assert_eq!(idp.fetches(), 2, "unknown kid refetches");
        let ghost2 = sign_kid(&keys().ed, Some("ghost-2"), &c);
        assert!(matches!(
            o.verify(&ghost2).await,
            Err(OidcError::UnknownKey)
        ));
        assert_eq!(idp.fetches(), 2, "not again within a minute");

        // Rotation: the issuer publishes a new key.
        let new_key = ec_key("ec-rotated");
        *idp.jwks.lock().unwrap() = jwks_of(&[&keys().ed, &new_key]);
        let rotated = sign(&new_key, &c);
        assert!(
            matches!(o.verify(&rotated).await, Err(OidcError::UnknownKey)),
            "still rate limited"
        );
        age_last_fetch(&o).await;
        assert!(o.verify(&rotated).await.is_ok());
        assert_eq!(idp.fetches(), 3);
        assert!(o.verify(&rotated).await.is_ok());
        assert!(o.verify(&sign(&keys().ed, &c)).await.is_ok());
        assert_eq!(idp.fetches(), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_fetch_once() {
        let idp = idp(jwks_of(&[&keys().ed])).await;
        let o = oidc(&idp);
        let good = sign(&keys().ed, &claims(json!({})));
        let ghost = sign_kid(&keys().ed, Some("ghost"), &claims(json!({})));
        let results = futures_util::future::join_all(
            (0..20).map(|i| o.verify(if i % 2 == 0 { &good } else { &ghost })),
        )
        .await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
        assert_eq!(idp.fetches(), 1);
    }

    #[tokio::test]
    async fn unusable_jwks_entries_are_skipped() {
        let short = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1u8; 8]), "kid": "short"});
        let oct = json!({"kty": "oct", "k": b64(b"secret"), "kid": "oct", "alg": "HS256"});
        let enc = {
            let mut j = keys().ed.jwk.clone();
            j["use"] = json!("enc");
            j["kid"] = json!("enc");
            j
        };
        let idp =
            idp(json!({"keys": [short, oct, enc, {"kty": "weird"}, 42, keys().ec.jwk]})).await;
        let o = oidc(&idp);
        let c = claims(json!({}));
        assert!(matches!(
            o.verify(&sign_kid(&keys().ed, Some("short"), &c)).await,
            Err(OidcError::UnknownKey)
        ));
        assert!(matches!(
            o.verify(&sign_kid(&keys().ed, Some("enc"), &c)).await,
            Err(OidcError::UnknownKey)
        ));
        assert!(o.verify(&sign(&keys().ec, &c)).await.is_ok());
    }

    #[tokio::test]
    async fn jwks_unreachable_is_a_jwks_error() {
        let mut raw_idp = idp(json!({})).await;
        raw_idp.url = "http://127.0.0.1:1/jwks".into();
        let o = oidc(&raw_idp);
        assert!(matches!(
            o.verify(&sign(&keys().ed, &claims(json!({})))).await,
            Err(OidcError::Jwks(_))
        ));
    }

    #[tokio::test]
    async fn roles_must_map() {
        let idp = idp(jwks_of(&[&keys().ed])).await;
        let o = oidc(&idp);
        for extra in [
            json!({"groups": ["strangers"]}),
            json!({"groups": "asc-admin"}),
            json!({"groups": 7}),
            json!({"groups": null}),
        ] {
            let t = sign(&keys().ed, &claims(extra));
            assert!(matches!(o.verify(&t).await, Err(OidcError::NoRole)));
        }
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove("groups");
        assert!(matches!(
            o.verify(&sign(&keys().ed, &c)).await,
            Err(OidcError::NoRole)
        ));
        c = claims(json!({"sub": ""}));
        assert!(matches!(
            o.verify(&sign(&keys().ed, &c)).await,
            Err(OidcError::Claim(_))
        ));
    }

    #[tokio::test]
    async fn malformed_tokens() {
        let idp = idp(jwks_of(&[&keys().ed])).await;
        let o = oidc(&idp);
        let huge = format!("{}.e30.sig", "a".repeat(MAX_TOKEN_BYTES));
        let not_json = format!("{}.e30.c2ln", b64(b"not json"));
        for t in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "!!!.###.$$$",
            "eyJ.eyJ.sig",
            "e30.e30.e30",
            "=.=.=",
            "é.é.é",
            &huge,
            &not_json,
        ] {
            assert!(
                matches!(o.verify(t).await, Err(OidcError::Malformed)),
                "{t:?}"
            );
        }
        let header = b64(br#"{"alg":"EdDSA","kid":"ed-1"}"#);
        for t in [
            format!("{header}.!!.sig"),
            format!("{header}.e30.AAAA"),
            format!("{header}.bm90IGpzb24.AAAA"),
        ] {
            assert!(o.verify(&t).await.is_err(), "{t:?}");
        }
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln-_"));
        for t in [
            "",
            "a.b",
            "a.b.",
            ".b.c",
            "a.b.c.d",
            "a.b+.c",
            "a.b.c=",
            "asc_static_token",
            "a b.c.d",
        ] {
            assert!(!looks_like_jwt(t), "{t:?}");
        }
    }
}
