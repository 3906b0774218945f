//! The audit trail (contract section 6): append-only entries in a hash chain per writer,
//! with ed25519-signed checkpoints, verifiable from the database or offline from an
//! export with the public key alone.
//!
//! `hash = SHA-256(prev_hash ‖ canonical JSON of {chain, seq, ts, kind, actor, tenant,
//! payload})`, where canonical JSON has its object keys sorted and no spaces; the first
//! entry's `prev_hash` is 64 zeros. A checkpoint signs the canonical JSON of
//! `{chain, seq, hash, ts}`. The chain id is derived from the signing key, so each
//! replica (each key) keeps its own chain.
//!
//! Verification walks every chain in `seq` order and reports the first entry that is
//! wrong: `removed` (a gap in `seq`), `inserted_or_reordered` (its `prev_hash` is not the
//! previous entry's hash), `changed` (its hash does not match its content), and for
//! checkpoints `bad_signature`, `checkpoint_mismatch` (it signs a hash the chain does
//! not have) and `truncated` (it covers entries that are gone). Entries after the last
//! checkpoint are chained but not yet signed.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::hex;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub chain: String,
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub actor: String,
    pub tenant: Option<String>,
    pub payload: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// A signed statement that `chain` had `hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
    pub ts: String,
    pub signature: String,
    pub public_key: String,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub chain: String,
    pub seq: i64,
    pub reason: String,
}

/// The outcome of a verification (the shape of `GET /admin/v1/audit/verify`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub entries: usize,
    pub chains: usize,
    pub checkpoints: usize,
    pub first_bad: Option<Problem>,
}

/// The hash of an entry's content after `prev_hash`.
pub fn entry_hash(e: &AuditEntry) -> String {
    let content = json!({
        "chain": e.chain, "seq": e.seq, "ts": e.ts, "kind": e.kind,
        "actor": e.actor, "tenant": e.tenant, "payload": e.payload,
    });
    let mut h = Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(content.to_string().as_bytes());
    hex(&h.finalize())
}

fn checkpoint_message(chain: &str, seq: i64, hash: &str, ts: &str) -> Vec<u8> {
    json!({"chain": chain, "seq": seq, "hash": hash, "ts": ts})
        .to_string()
        .into_bytes()
}

/// The chain id of a key: the first 16 hex digits of the SHA-256 of its public half.
pub fn chain_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes()))[..16].to_owned()
}

/// Signs a checkpoint of `chain` at (`seq`, `hash`).
pub fn sign_checkpoint(
    key: &SigningKey,
    chain: &str,
    seq: i64,
    hash: &str,
    ts: &str,
) -> Checkpoint {
    let sig = key.sign(&checkpoint_message(chain, seq, hash, ts));
    Checkpoint {
        chain: chain.to_owned(),
        seq,
        hash: hash.to_owned(),
        ts: ts.to_owned(),
        signature: hex(&sig.to_bytes()),
        public_key: hex(key.verifying_key().as_bytes()),
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads a public key in hex (as `asc audit public-key` prints it).
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&unhex::<32>(text.trim())?).ok()
}

fn signature_ok(c: &Checkpoint, key: &VerifyingKey) -> bool {
    let Some(sig) = unhex::<64>(&c.signature) else {
        return false;
    };
    key.verify(
        &checkpoint_message(&c.chain, c.seq, &c.hash, &c.ts),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

/// Verifies entries (any order) and checkpoints. `trusted`: the public key checkpoints
/// must be signed with (offline verification); `None` trusts each checkpoint's own key
/// only if it matches its chain id (which is derived from the key).
pub fn verify(
    entries: &[AuditEntry],
    checkpoints: &[Checkpoint],
    trusted: Option<&VerifyingKey>,
) -> Report {
    let mut chains: std::collections::BTreeMap<&str, Vec<&AuditEntry>> = Default::default();
    for e in entries {
        chains.entry(e.chain.as_str()).or_default().push(e);
    }
    let mut first_bad = None;
    let mut bad = |chain: &str, seq: i64, reason: &str| {
        if first_bad.is_none() {
            first_bad = Some(Problem {
                chain: chain.to_owned(),
                seq,
                reason: reason.to_owned(),
            });
        }
    };
    for (chain, list) in chains.iter_mut() {
        list.sort_by_key(|e| e.seq);
        let mut prev_hash = GENESIS.to_owned();
        for (expected_seq, e) in (1..).zip(list.iter()) {
            if e.seq != expected_seq {
                bad(
                    chain,
                    expected_seq,
                    if e.seq > expected_seq {
                        "removed"
                    } else {
                        "inserted_or_reordered"
                    },
                );
                break;
            }
            if e.prev_hash != prev_hash {
                bad(chain, e.seq, "inserted_or_reordered");
                break;
            }
            if entry_hash(e) != e.hash {
                bad(chain, e.seq, "changed");
                break;
            }
            prev_hash = e.hash.clone();
        }
    }
    let mut cps: Vec<&Checkpoint> = checkpoints.iter().collect();
    cps.sort_by(|a, b| (&a.chain, a.seq).cmp(&(&b.chain, b.seq)));
    for c in cps {
        let key = match trusted {
            Some(k) => Some(*k),
            None => parse_public_key(&c.public_key).filter(|k| chain_id(k) == c.chain),
        };
        if !key.is_some_and(|k| signature_ok(c, &k)) {
            bad(&c.chain, c.seq, "bad_signature");
            continue;
        }
        let entry = chains
            .get(c.chain.as_str())
            .and_then(|l| l.iter().find(|e| e.seq == c.seq));
        match entry {
            None => bad(&c.chain, c.seq, "truncated"),
            Some(e) if e.hash != c.hash => bad(&c.chain, c.seq, "checkpoint_mismatch"),
            Some(_) => {}
        }
    }
    Report {
        ok: first_bad.is_none(),
        entries: entries.len(),
        chains: chains.len(),
        checkpoints: checkpoints.len(),
        first_bad,
    }
}

/// Loads the signing key from `path`, creating it (mode 0600) if missing. The file
/// holds the 32-byte seed in hex.
pub fn load_or_create_key(path: &Path) -> std::io::Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => unhex::<32>(text.trim())
            .map(|seed| SigningKey::from_bytes(&seed))
            .ok_or_else(|| {
                std::io::Error::other(format!("{}: not an audit signing key", path.display()))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let seed: [u8; 32] = rand::random();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path)?;
            std::io::Write::write_all(&mut f, hex(&seed).as_bytes())?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(e),
    }
}

/// The writer of this replica's chain. Appends are serialised by its own lock (never
/// taken on the request path: records reach it through the record writer).
pub struct Auditor {
    store: crate::store::Store,
    key: SigningKey,
    pub chain: String,
    head: tokio::sync::Mutex<Head>,
}

struct Head {
    seq: i64,
    hash: String,
    checkpointed: i64,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auditor({})", self.chain)
    }
}

impl Auditor {
    /// Opens this replica's chain (resuming after its last entry).
    pub async fn open(
        store: crate::store::Store,
        key: SigningKey,
    ) -> Result<Self, crate::store::StoreError> {
        let chain = chain_id(&key.verifying_key());
        let (seq, hash) = store
            .audit_head(&chain)
            .await?
            .unwrap_or((0, GENESIS.to_owned()));
        let checkpointed = store
            .checkpoints()
            .await?
            .iter()
            .filter(|c| c.chain == chain)
            .map(|c| c.seq)
            .max()
            .unwrap_or(0);
        Ok(Self {
            store,
            key,
            chain,
            head: tokio::sync::Mutex::new(Head {
                seq,
                hash,
                checkpointed,
            }),
        })
    }

    pub fn public_key_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// Appends entries `(ts, kind, actor, tenant, payload)` in one transaction.
    pub async fn append(
        &self,
        items: Vec<(String, String, String, Option<String>, Value)>,
    ) -> Result<(), crate::store::StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut head = self.head.lock().await;
        let (mut seq, mut prev) = (head.seq, head.hash.clone());
        let mut entries = Vec::with_capacity(items.len());
        for (ts, kind, actor, tenant, payload) in items {
            seq += 1;
            let mut e = AuditEntry {
                chain: self.chain.clone(),
                seq,
                ts,
                kind,
                actor,
                tenant,
                payload,
                prev_hash: prev,
                hash: String::new(),
            };
            e.hash = entry_hash(&e);
            prev = e.hash.clone();
            entries.push(e);
        }
        self.store.add_audit_entries(&entries).await?;
        head.seq = seq;
        head.hash = prev;
        Ok(())
    }

    /// Signs and stores a checkpoint of the chain's head, if it moved since the last one.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, crate::store::StoreError> {
        let mut head = self.head.lock().await;
        if head.seq == 0 || head.seq == head.checkpointed {
            return Ok(None);
        }
        let ts = crate::store::timestamp(std::time::SystemTime::now());
        let c = sign_checkpoint(&self.key, &self.chain, head.seq, &head.hash, &ts);
        self.store.add_checkpoint(&c).await?;
        head.checkpointed = head.seq;
        Ok(Some(c))
    }
}

/// Verifies everything in the store.
pub async fn verify_store(store: &crate::store::Store) -> Result<Report, crate::store::StoreError> {
    let entries = store.audit_entries(None, None).await?;
    let checkpoints = store.checkpoints().await?;
    Ok(verify(&entries, &checkpoints, None))
}

/// The export of the store as JSON Lines: checkpoints, then entries (within the range).
pub async fn export(
    store: &crate::store::Store,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<String, crate::store::StoreError> {
    let mut out = String::new();
    for c in store.checkpoints().await? {
        out.push_str(&serde_json::to_string(&ExportLine::Checkpoint(c)).unwrap_or_default());
        out.push('\n');
    }
    for e in store.audit_entries(since, until).await? {
        out.push_str(&serde_json::to_string(&ExportLine::Entry(e)).unwrap_or_default());
        out.push('\n');
    }
    Ok(out)
}

/// An export line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    Checkpoint(Checkpoint),
    Entry(AuditEntry),
}

/// Reads a JSON Lines export; a line that does not parse is reported by number.
pub fn read_export(text: &str) -> Result<(Vec<AuditEntry>, Vec<Checkpoint>), String> {
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<ExportLine>(line) {
            Ok(ExportLine::Entry(e)) => entries.push(e),
            Ok(ExportLine::Checkpoint(c)) => checkpoints.push(c),
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok((entries, checkpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64, key: &SigningKey) -> (Vec<AuditEntry>, Vec<Checkpoint>) {
        let id = chain_id(&key.verifying_key());
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for seq in 1..=n {
            let mut e = AuditEntry {
                chain: id.clone(),
                seq,
                ts: format!("2026-11-29T00:00:{seq:02}Z"),
                kind: "request".into(),
                actor: "gateway".into(),
                tenant: Some("t".into()),
                payload: json!({"n": seq}),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            e.hash = entry_hash(&e);
            prev = e.hash.clone();
            out.push(e);
        }
        let cp = sign_checkpoint(key, &id, n, &prev, "2026-11-29T00:01:00Z");
        let mid = sign_checkpoint(
            key,
            &id,
            n / 2,
            &out[(n / 2 - 1) as usize].hash,
            "2026-11-29T00:00:30Z",
        );
        (out, vec![mid, cp])
    }

    fn reason(r: &Report) -> Option<(i64, &str)> {
        r.first_bad.as_ref().map(|p| (p.seq, p.reason.as_str()))
    }

    #[test]
    fn an_intact_chain_verifies_and_each_tampering_is_named() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (entries, cps) = chain(10, &key);
        let r = verify(&entries, &cps, Some(&key.verifying_key()));
        assert!(r.ok, "{r:?}");
        assert_eq!((r.entries, r.chains, r.checkpoints), (10, 1, 2));
        assert!(verify(&entries, &cps, None).ok, "self-identifying keys");

        let mut changed = entries.clone();
        changed[3].payload = json!({"n": 999});
        assert_eq!(reason(&verify(&changed, &cps, None)), Some((4, "changed")));

        let mut removed = entries.clone();
        removed.remove(5);
        assert_eq!(reason(&verify(&removed, &cps, None)), Some((6, "removed")));

        let mut swapped = entries.clone();
        let (a, b) = (swapped[2].seq, swapped[3].seq);
        swapped[2].seq = b;
        swapped[3].seq = a;
        assert_eq!(
            reason(&verify(&swapped, &cps, None)),
            Some((3, "inserted_or_reordered"))
        );

        let mut inserted = entries.clone();
        let mut forged = inserted[4].clone();
        forged.payload = json!({"forged": true});
        forged.hash = entry_hash(&forged);
        inserted[4] = forged;
        assert_eq!(
            reason(&verify(&inserted, &cps, None)),
            Some((6, "inserted_or_reordered"))
        );

        let cut: Vec<_> = entries[..8].to_vec();
        assert_eq!(reason(&verify(&cut, &cps, None)), Some((10, "truncated")));

        let mut forged_cp = cps.clone();
        forged_cp[1].hash = entries[2].hash.clone();
        assert_eq!(
            reason(&verify(&entries, &forged_cp, None)),
            Some((10, "bad_signature"))
        );

        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            reason(&verify(&entries, &cps, Some(&other.verifying_key()))),
            Some((5, "bad_signature")),
            "offline verification trusts only the given key"
        );
    }

    /// Payloads are stored as text and hashed as values: floats must survive the round
    /// trip exactly (serde_json's `float_roundtrip`), or a stored entry would not verify.
    #[test]
    fn float_payloads_hash_the_same_after_a_round_trip() {
        for x in [
            0.1 + 0.2,
            2.708_475_000_000_000_4,
            1e-7 / 3.0,
            123_456.789_012_345_67,
        ] {
            let mut e = AuditEntry {
                chain: "c".into(),
                seq: 1,
                ts: "t".into(),
                kind: "request".into(),
                actor: "gateway".into(),
                tenant: None,
                payload: json!({"latency_ms": x}),
                prev_hash: GENESIS.into(),
                hash: String::new(),
            };
            e.hash = entry_hash(&e);
            let stored = e.payload.to_string();
            let read = AuditEntry {
                payload: serde_json::from_str(&stored).unwrap(),
                ..e.clone()
            };
            assert_eq!(entry_hash(&read), e.hash, "{x}");
        }
    }

    #[test]
    fn exports_round_trip_and_keys_persist() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let (entries, cps) = chain(4, &key);
        let mut text = String::new();
        for c in &cps {
            text.push_str(&serde_json::to_string(&ExportLine::Checkpoint(c.clone())).unwrap());
            text.push('\n');
        }
        for e in &entries {
            text.push_str(&serde_json::to_string(&ExportLine::Entry(e.clone())).unwrap());
            text.push('\n');
        }
        let (e2, c2) = read_export(&text).unwrap();
        assert_eq!((e2, c2), (entries, cps));
        assert!(read_export("{nope").is_err());

        let dir = std::env::temp_dir().join(format!("asc-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("k.key");
        let k1 = load_or_create_key(&path).unwrap();
        let k2 = load_or_create_key(&path).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let pk = hex(k1.verifying_key().as_bytes());
        assert_eq!(parse_public_key(&pk), Some(k1.verifying_key()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
