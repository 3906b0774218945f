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
//!
//! Retention ([`prune`], `audit.retention_days`) drops the payloads of `request` entries
//! older than the retention, but only up to the chain's last signed checkpoint and only
//! once the span it prunes has verified (so pruning never erases the evidence of a
//! tampering). A pruned entry keeps its seq, ts, kind, actor, tenant, prev_hash and hash:
//! its hash cannot be recomputed, so verification checks its linkage only, and it stays
//! anchored because the next entry seals its hash and the checkpoint after it is signed.
//! The report counts what was pruned (`pruned`, `pruned_spans`); a pruned entry after
//! the last signed checkpoint is `pruned_unanchored`, and a pruned entry of a kind
//! retention never prunes is `pruned_kind`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::hex;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The kind of entry whose payloads retention prunes (the execution records).
pub const PRUNED_KIND: &str = "request";

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
    /// The payload was dropped by retention (it is then `null`); only in exports of
    /// pruned entries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pruned: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AuditEntry {
    /// Retention dropped this entry's payload: its hash can no longer be recomputed. A
    /// pruned mark on an entry that still has a payload counts for nothing (the payload
    /// is checked as usual), so the mark cannot shield an edited payload.
    pub fn is_pruned(&self) -> bool {
        self.pruned && self.payload.is_null()
    }
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

/// The pruned entries of one chain: seqs `first_seq..=last_seq` hold `entries` pruned
/// entries (other kinds in between keep their payloads), none newer than `newest_ts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedSpan {
    pub chain: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub entries: usize,
    pub newest_ts: String,
}

/// The outcome of a verification (the shape of `GET /admin/v1/audit/verify`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub entries: usize,
    pub chains: usize,
    pub checkpoints: usize,
    /// Entries whose payload retention dropped (verified by linkage only).
    pub pruned: usize,
    pub pruned_spans: Vec<PrunedSpan>,
    pub first_bad: Option<Problem>,
}

/// The hash of an entry's content after `prev_hash`.
pub fn entry_hash(e: &AuditEntry) -> String {
    hash_with_payload(e, &e.payload.to_string())
}

/// [`entry_hash`] given the payload's JSON text (a `Value`'s, so its keys are sorted):
/// the canonical JSON of the rest is fed to the hash around it, keys in order, without
/// building (or copying) another value or text. The record writer serialises each
/// payload once, for the store and for this.
pub fn hash_with_payload(e: &AuditEntry, payload: &str) -> String {
    /// The hash as an `io::Write`, so JSON strings are escaped straight into it.
    struct Feed(Sha256);
    impl std::io::Write for Feed {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn string(h: &mut Feed, s: &str) {
        // Writing to a hash cannot fail, and a &str always serialises.
        let _ = serde_json::to_writer(&mut *h, s);
    }
    let mut h = Feed(Sha256::new());
    h.0.update(e.prev_hash.as_bytes());
    h.0.update(b"{\"actor\":");
    string(&mut h, &e.actor);
    h.0.update(b",\"chain\":");
    string(&mut h, &e.chain);
    h.0.update(b",\"kind\":");
    string(&mut h, &e.kind);
    h.0.update(b",\"payload\":");
    h.0.update(payload.as_bytes());
    h.0.update(b",\"seq\":");
    h.0.update(e.seq.to_string().as_bytes());
    h.0.update(b",\"tenant\":");
    match &e.tenant {
        Some(t) => string(&mut h, t),
        None => h.0.update(b"null"),
    }
    h.0.update(b",\"ts\":");
    string(&mut h, &e.ts);
    h.0.update(b"}");
    hex(&h.0.finalize())
}

fn checkpoint_message(chain: &str, seq: i64, hash: &str, ts: &str) -> Vec<u8> {
    json!({"chain": chain, "seq": seq, "hash": hash, "ts": ts})
        .to_string()
        .into_bytes()
}

/// The chain id of a key: the first 16 hex digits of the SHA-256 of its public half.
/// Replicas sharing one database and one key write chains `ID`, `ID.1`, `ID.2`, …
/// (see [`crate::store::Store::claim_chain`]).
pub fn chain_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes()))[..16].to_owned()
}

/// Whether `chain` is one of `key`'s chains (`ID` or `ID.N`).
pub fn key_owns_chain(key: &VerifyingKey, chain: &str) -> bool {
    let id = chain_id(key);
    match chain.strip_prefix(id.as_str()) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
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

/// The key a checkpoint must be signed with: `trusted`, or else its own key if that
/// matches its chain id (which is derived from the key).
fn signed(c: &Checkpoint, trusted: Option<&VerifyingKey>) -> bool {
    let key = match trusted {
        Some(k) => Some(*k),
        None => parse_public_key(&c.public_key).filter(|k| key_owns_chain(k, &c.chain)),
    };
    key.is_some_and(|k| signature_ok(c, &k))
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
    // Each signature is checked once. The highest seq each chain has a valid signature
    // for: pruned entries up to it are anchored.
    let mut cps: Vec<(&Checkpoint, bool)> = checkpoints
        .iter()
        .map(|c| (c, signed(c, trusted)))
        .collect();
    cps.sort_by(|(a, _), (b, _)| (&a.chain, a.seq).cmp(&(&b.chain, b.seq)));
    let mut anchors: std::collections::BTreeMap<&str, i64> = Default::default();
    let mut signed_hashes = std::collections::BTreeSet::new();
    for (c, _) in cps.iter().filter(|(_, ok)| *ok) {
        let a = anchors.entry(c.chain.as_str()).or_insert(c.seq);
        *a = (*a).max(c.seq);
        signed_hashes.insert((c.chain.as_str(), c.hash.as_str()));
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
    let mut pruned_spans = Vec::new();
    for (chain, list) in chains.iter_mut() {
        list.sort_by_key(|e| e.seq);
        let anchor = anchors.get(chain).copied().unwrap_or(0);
        pruned_spans.extend(pruned_span(chain, list));
        for (i, e) in list.iter().enumerate() {
            let expected_seq = i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1);
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
            let prev_hash = match i.checked_sub(1).and_then(|j| list.get(j)) {
                Some(p) => p.hash.as_str(),
                None => GENESIS,
            };
            if e.prev_hash != prev_hash {
                let (seq, reason) = broken_link(list, i, anchor, &|hash: &str| {
                    signed_hashes.contains(&(*chain, hash))
                });
                bad(chain, seq, reason);
                break;
            }
            if e.is_pruned() {
                if e.kind != PRUNED_KIND {
                    bad(chain, e.seq, "pruned_kind");
                    break;
                }
                if e.seq > anchor {
                    bad(chain, e.seq, "pruned_unanchored");
                    break;
                }
            } else if entry_hash(e) != e.hash {
                bad(chain, e.seq, "changed");
                break;
            }
        }
    }
    for (c, signed) in cps {
        if !signed {
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
        pruned: pruned_spans.iter().map(|s| s.entries).sum(),
        pruned_spans,
        first_bad,
    }
}

/// Which entry to name when `list[i]`'s `prev_hash` is not its predecessor's hash.
/// - It links to the entry before its predecessor, and no signed checkpoint vouches for
///   the predecessor's hash: the predecessor was inserted.
/// - Its predecessor is pruned (so its hash cannot be recomputed) while it itself still
///   has its payload, its hash matches its content (so its `prev_hash` is genuine) and a
///   signed checkpoint covers it: the pruned predecessor's hash was changed.
/// - Otherwise this entry is out of place.
fn broken_link(
    list: &[&AuditEntry],
    i: usize,
    anchor: i64,
    is_signed: &dyn Fn(&str) -> bool,
) -> (i64, &'static str) {
    let Some(e) = list.get(i) else {
        return (0, "inserted_or_reordered");
    };
    if let Some(p) = i.checked_sub(1).and_then(|j| list.get(j)) {
        let before = match i.checked_sub(2).and_then(|j| list.get(j)) {
            Some(b) => b.hash.as_str(),
            None => GENESIS,
        };
        if e.prev_hash == before && !is_signed(&p.hash) {
            return (p.seq, "inserted_or_reordered");
        }
        if p.is_pruned() && !e.is_pruned() && e.seq <= anchor && entry_hash(e) == e.hash {
            return (p.seq, "changed");
        }
    }
    (e.seq, "inserted_or_reordered")
}

/// The pruned entries of one chain (sorted by seq), if it has any.
fn pruned_span(chain: &str, list: &[&AuditEntry]) -> Option<PrunedSpan> {
    let mut pruned = list.iter().filter(|e| e.is_pruned());
    let first = pruned.next()?;
    let mut span = PrunedSpan {
        chain: chain.to_owned(),
        first_seq: first.seq,
        last_seq: first.seq,
        entries: 1,
        newest_ts: first.ts.clone(),
    };
    for e in pruned {
        span.last_seq = e.seq;
        span.entries += 1;
        if e.ts > span.newest_ts {
            span.newest_ts.clone_from(&e.ts);
        }
    }
    Some(span)
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
    /// The chain id this key's chains start with (see [`chain_id`]).
    base: String,
    /// The chain written now, for readers outside the writer's lock.
    chain: arc_swap::ArcSwap<String>,
    head: tokio::sync::Mutex<Head>,
    /// On a SQLite file, the lock that says this process writes the chain (see
    /// [`crate::store::Store::claim_file_chain`]); released when the auditor goes.
    _claim: Option<std::fs::File>,
}

struct Head {
    chain: String,
    seq: i64,
    hash: String,
    checkpointed: i64,
    /// On PostgreSQL, the connection whose session lock says this process writes
    /// `chain`. Entries are written through it, so none is stored once the lock is gone
    /// (the connection lost, and another process perhaps holding the chain now).
    lease: Option<sqlx::PgConnection>,
    /// When the lease last carried a write: one idle for long is checked before the
    /// next (a proxy or `idle_session_timeout` may have closed it meanwhile).
    used: std::time::Instant,
    /// The last write failed without its outcome being known (it may have been
    /// committed): the next one starts from the stored head and leaves out the records
    /// already stored.
    unsure: bool,
}

/// A lease idle this long is pinged before it carries a write.
const LEASE_IDLE: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auditor({})", self.chain.load())
    }
}

impl Head {
    /// `chain`'s head as stored (its last entry and last checkpoint).
    async fn stored(
        store: &crate::store::Store,
        chain: String,
        lease: Option<sqlx::PgConnection>,
    ) -> Result<Self, crate::store::StoreError> {
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
            chain,
            seq,
            hash,
            checkpointed,
            lease,
            used: std::time::Instant::now(),
            unsure: false,
        })
    }
}

impl Auditor {
    /// Opens this replica's chain (resuming after its last entry).
    pub async fn open(
        store: crate::store::Store,
        key: SigningKey,
    ) -> Result<Self, crate::store::StoreError> {
        let base = chain_id(&key.verifying_key());
        let (chain, lease, claim) = match store.backend() {
            crate::store::Backend::Sqlite => match store.claim_file_chain(&base)? {
                Some((chain, claim)) => (chain, None, Some(claim)),
                None => (base.clone(), None, None),
            },
            crate::store::Backend::Postgres => {
                let (chain, lease) = store.claim_chain(&base, None).await?;
                (chain, Some(lease), None)
            }
        };
        let head = Head::stored(&store, chain, lease).await?;
        Ok(Self {
            store,
            key,
            base,
            chain: arc_swap::ArcSwap::from_pointee(head.chain.clone()),
            head: tokio::sync::Mutex::new(head),
            _claim: claim,
        })
    }

    /// The chain this process writes now (`ID`, or `ID.N` beside other processes with
    /// the same key on the same database).
    pub fn chain(&self) -> Arc<String> {
        self.chain.load_full()
    }

    pub fn public_key_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// Links entries after `head`: each `(ts, kind, actor, tenant, payload, payload's JSON
    /// text)` gets the next seq, the previous hash, and its hash. Returns the entries and
    /// the new head (to be taken only once they are stored).
    fn link<'t>(
        &self,
        head: &Head,
        items: impl Iterator<Item = (String, String, String, Option<String>, Value, &'t str)>,
    ) -> (Vec<AuditEntry>, i64, String) {
        let (mut seq, mut prev) = (head.seq, head.hash.clone());
        let mut entries = Vec::with_capacity(items.size_hint().0);
        for (ts, kind, actor, tenant, payload, text) in items {
            seq += 1;
            let mut e = AuditEntry {
                chain: head.chain.clone(),
                seq,
                ts,
                kind,
                actor,
                tenant,
                payload,
                prev_hash: prev,
                hash: String::new(),
                pruned: false,
            };
            e.hash = hash_with_payload(&e, text);
            prev = e.hash.clone();
            entries.push(e);
        }
        (entries, seq, prev)
    }

    /// Appends entries `(ts, kind, actor, tenant, payload)` in one transaction.
    pub async fn append(
        &self,
        items: Vec<(String, String, String, Option<String>, Value)>,
    ) -> Result<(), crate::store::StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = items.iter().map(|i| i.4.to_string()).collect();
        let mut head = self.head.lock().await;
        self.hold(&mut head).await?;
        let linked =
            items
                .into_iter()
                .zip(&texts)
                .map(|((ts, kind, actor, tenant, payload), text)| {
                    (ts, kind, actor, tenant, payload, text.as_str())
                });
        let (entries, seq, hash) = self.link(&head, linked);
        let written = self
            .store
            .add_audit_entries(head.lease.as_mut(), &entries, &texts)
            .await;
        self.settle(&mut head, written, seq, hash).await
    }

    /// Stores request records and appends them to the chain in one transaction (group
    /// commit: one fsync for both). `rows` are the store's rows (id, ts, tenant, status,
    /// the record's canonical JSON text, which is also the entry's payload).
    ///
    /// Returns the rows found already stored, and so not written (a write whose commit
    /// was reported failed, tried again), each with its stored status: what is stored
    /// for them is what that write carried, which may be older than the row.
    pub async fn append_records(
        &self,
        rows: &[crate::store::RecordRow],
    ) -> Result<std::collections::HashMap<String, String>, crate::store::StoreError> {
        if rows.is_empty() {
            return Ok(Default::default());
        }
        let mut head = self.head.lock().await;
        let unsure = self.hold(&mut head).await?;
        let unstored: Vec<crate::store::RecordRow>;
        let mut rows = rows;
        let mut stored = Default::default();
        if unsure {
            // The last write may have been committed after all: the head is the stored
            // one now (this process holds the chain, so what is stored past its old
            // head is its own); write only the records not stored yet.
            let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            stored = self.store.stored_records(&ids).await?;
            if !stored.is_empty() {
                unstored = rows
                    .iter()
                    .filter(|r| !stored.contains_key(&r.0))
                    .cloned()
                    .collect();
                rows = &unstored;
                if rows.is_empty() {
                    return Ok(stored);
                }
            }
        }
        // Stored and hashed as the text; the entry's value is not needed here.
        let linked = rows.iter().map(|(_, ts, tenant, _, text)| {
            let (kind, actor) = ("request".to_owned(), "gateway".to_owned());
            (
                ts.clone(),
                kind,
                actor,
                tenant.clone(),
                Value::Null,
                text.as_str(),
            )
        });
        let (entries, seq, hash) = self.link(&head, linked);
        let texts: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
        let written = self
            .store
            .add_records_and_entries(head.lease.as_mut(), rows, &entries, &texts)
            .await;
        self.settle(&mut head, written, seq, hash).await?;
        Ok(stored)
    }

    /// As if the last write had been reported failed and the stored head could not be
    /// read: the next write starts unsure of what was stored.
    #[cfg(test)]
    pub(crate) async fn lose_last_answer(&self) {
        self.head.lock().await.unsure = true;
    }

    /// Moves the head to `(seq, hash)` once a write is known stored: when it succeeded,
    /// or when it failed but the chain's stored head is already that (the connection
    /// broke after the commit, before its answer). Otherwise the write's error, the
    /// head unmoved, so the same entries can be tried again.
    async fn settle(
        &self,
        head: &mut Head,
        written: Result<(), crate::store::StoreError>,
        seq: i64,
        hash: String,
    ) -> Result<(), crate::store::StoreError> {
        if let Err(e) = written {
            match self.store.audit_head(&head.chain).await {
                Ok(Some((stored, stored_hash))) if stored == seq && stored_hash == hash => {
                    tracing::warn!(chain = %head.chain, seq,
                        "a write reported failure but was committed; the chain continues after it");
                }
                _ => {
                    head.unsure = true;
                    self.check_lease(head).await;
                    return Err(e);
                }
            }
        }
        head.seq = seq;
        head.hash = hash;
        Ok(())
    }

    /// The head as stored, after a write whose outcome was unknown.
    async fn resync(&self, head: &mut Head) -> Result<(), crate::store::StoreError> {
        let (seq, hash) = self
            .store
            .audit_head(&head.chain)
            .await?
            .unwrap_or((0, GENESIS.to_owned()));
        if seq != head.seq {
            tracing::warn!(chain = %head.chain, was = head.seq, now = seq,
                "a write whose answer was lost had been committed; the chain goes on after it");
        }
        head.seq = seq;
        head.hash = hash;
        head.unsure = false;
        Ok(())
    }

    /// After a failed write on PostgreSQL: if the lease's connection is gone, so is the
    /// lock on the chain. Claims a chain again (its own when still free, else the next
    /// free one) and continues from that chain's stored head; the failed entries are
    /// linked afresh when the writer tries again. Nothing is written meanwhile.
    async fn check_lease(&self, head: &mut Head) {
        let Some(conn) = head.lease.as_mut() else {
            return;
        };
        if sqlx::Connection::ping(conn).await.is_ok() {
            return;
        }
        head.lease = None;
        self.reclaim(head).await;
    }

    /// Readies the head for a write (or a checkpoint). On PostgreSQL the chain must be
    /// held: a lease idle for long is checked, one lost is claimed again, or this
    /// fails (and the write is tried again later). After a write whose outcome was
    /// unknown, the head is taken from the store; returns true then (the records of
    /// that write may be stored already).
    async fn hold(&self, head: &mut Head) -> Result<bool, crate::store::StoreError> {
        if self.store.backend() == crate::store::Backend::Postgres {
            if head.lease.is_some() && head.used.elapsed() >= LEASE_IDLE {
                self.check_lease(head).await;
            }
            head.used = std::time::Instant::now();
            if head.lease.is_none() {
                self.reclaim(head).await;
            }
            if head.lease.is_none() {
                return Err(crate::store::StoreError::Open(
                    "this process holds no audit chain (its lock was lost)".into(),
                ));
            }
        }
        if !head.unsure {
            return Ok(false);
        }
        self.resync(head).await?;
        Ok(true)
    }

    async fn reclaim(&self, head: &mut Head) {
        let claimed = match self.store.claim_chain(&self.base, Some(&head.chain)).await {
            Ok((chain, lease)) => Head::stored(&self.store, chain, Some(lease)).await,
            Err(e) => Err(e),
        };
        match claimed {
            Ok(fresh) => {
                if fresh.chain != head.chain {
                    tracing::warn!(was = %head.chain, now = %fresh.chain,
                        "the audit chain's lock was lost with its connection and another process holds the chain now; this process continues on a chain of its own");
                }
                self.chain.store(Arc::new(fresh.chain.clone()));
                // (Still unsure whether the failed write was stored, on the old chain.)
                let unsure = head.unsure;
                *head = fresh;
                head.unsure = unsure;
            }
            Err(e) => {
                tracing::error!(chain = %head.chain, error = %e,
                    "the audit chain's lock was lost with its connection and could not be claimed again; entries wait");
            }
        }
    }

    /// Signs and stores a checkpoint of the chain's head, if it moved since the last one.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, crate::store::StoreError> {
        let mut head = self.head.lock().await;
        // The chain must still be this process's (and an idle lease is checked here,
        // once a checkpoint interval, not only when a write needs it).
        self.hold(&mut head).await?;
        if head.seq == 0 || head.seq == head.checkpointed {
            return Ok(None);
        }
        let ts = crate::store::timestamp(std::time::SystemTime::now());
        let c = sign_checkpoint(&self.key, &head.chain, head.seq, &head.hash, &ts);
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

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// The cutoff: records and payloads older than this were pruned.
    pub before: String,
    /// Rows deleted from the records table.
    pub records: u64,
    /// Audit entries whose payload was dropped.
    pub payloads: u64,
    /// Chains left unpruned because the span to prune did not verify (pruning it would
    /// erase the evidence); verification reports the same problem.
    pub refused: Vec<Problem>,
}

/// Rows read or written at a time by a retention pass, so that no statement holds the
/// database for long while the record writer waits.
const PRUNE_PAGE: i64 = 1000;

/// The retention pass of `audit.retention_days`: deletes the records older than
/// `retention_days` before `now`, and drops the payloads of the `request` entries older
/// than that, in each chain only up to its last signed checkpoint and only if the span
/// from the first entry to prune up to that checkpoint verifies.
pub async fn prune(
    store: &crate::store::Store,
    retention_days: u64,
    now: SystemTime,
) -> Result<Pruned, crate::store::StoreError> {
    let Some(cutoff) = now.checked_sub(Duration::from_secs(retention_days.saturating_mul(86_400)))
    else {
        return Ok(Pruned::default());
    };
    let cutoff = crate::store::timestamp(cutoff);
    let mut done = Pruned {
        before: cutoff.clone(),
        ..Pruned::default()
    };
    loop {
        let n = store.delete_records_before(&cutoff, PRUNE_PAGE).await?;
        done.records += n;
        if n == 0 {
            break;
        }
    }
    // Each chain's highest checkpoint signed by the chain's own key.
    let mut anchors: std::collections::BTreeMap<String, Checkpoint> = Default::default();
    for c in store.checkpoints().await? {
        if signed(&c, None) && anchors.get(&c.chain).is_none_or(|a| a.seq < c.seq) {
            anchors.insert(c.chain.clone(), c);
        }
    }
    for (chain, anchor) in &anchors {
        let Some(from) = store
            .first_prunable(chain, anchor.seq, PRUNED_KIND, &cutoff)
            .await?
        else {
            continue;
        };
        if let Err(problem) = check_span(store, anchor, from).await? {
            tracing::error!(
                chain = %problem.chain,
                seq = problem.seq,
                reason = %problem.reason,
                "retention: the audit chain does not verify there; its payloads are kept"
            );
            done.refused.push(problem);
            continue;
        }
        let mut at = from;
        while at <= anchor.seq {
            let to = at.saturating_add(PRUNE_PAGE - 1).min(anchor.seq);
            done.payloads += store
                .prune_audit_payloads(chain, at, to, PRUNED_KIND, &cutoff)
                .await?;
            at = to.saturating_add(1);
        }
    }
    Ok(done)
}

/// Verifies the entries `from..=anchor.seq` of the anchor's chain, starting from the
/// hash of the entry before `from`, and ending at the checkpoint's hash.
async fn check_span(
    store: &crate::store::Store,
    anchor: &Checkpoint,
    from: i64,
) -> Result<Result<(), Problem>, crate::store::StoreError> {
    let chain = anchor.chain.as_str();
    let problem = |seq: i64, reason: &str| {
        Err(Problem {
            chain: chain.to_owned(),
            seq,
            reason: reason.to_owned(),
        })
    };
    let mut prev = if from <= 1 {
        GENESIS.to_owned()
    } else {
        match store.audit_span(chain, from - 1, from - 1, 1).await?.pop() {
            Some(e) => e.hash,
            None => return Ok(problem(from - 1, "removed")),
        }
    };
    let mut expected = from;
    while expected <= anchor.seq {
        let page = store
            .audit_span(chain, expected, anchor.seq, PRUNE_PAGE)
            .await?;
        if page.is_empty() {
            return Ok(problem(expected, "truncated"));
        }
        for e in page {
            if e.seq != expected {
                return Ok(problem(expected, "removed"));
            }
            if e.prev_hash != prev {
                return Ok(problem(e.seq, "inserted_or_reordered"));
            }
            if !e.is_pruned() && entry_hash(&e) != e.hash {
                return Ok(problem(e.seq, "changed"));
            }
            prev = e.hash;
            expected += 1;
        }
    }
    if prev != anchor.hash {
        return Ok(problem(anchor.seq, "checkpoint_mismatch"));
    }
    Ok(Ok(()))
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
                pruned: false,
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

    /// What retention does to an entry.
    fn prune_entry(e: &mut AuditEntry) {
        e.payload = Value::Null;
        e.pruned = true;
    }

    /// Re-chains `entries` after an edit (as a forger with the whole table would).
    fn rechain(entries: &mut [AuditEntry]) {
        let mut prev = GENESIS.to_owned();
        for e in entries {
            e.prev_hash = prev;
            e.hash = entry_hash(e);
            prev = e.hash.clone();
        }
    }

    #[test]
    fn a_key_owns_its_chain_and_its_numbered_siblings_only() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let id = chain_id(&key);
        assert!(key_owns_chain(&key, &id));
        assert!(key_owns_chain(&key, &format!("{id}.1")));
        assert!(key_owns_chain(&key, &format!("{id}.255")));
        for other in [
            format!("{id}."),
            format!("{id}.x"),
            format!("{id}.1.2"),
            format!("{id}1"),
            id[..15].to_owned(),
            chain_id(&SigningKey::from_bytes(&[8; 32]).verifying_key()),
        ] {
            assert!(!key_owns_chain(&key, &other), "{other}");
        }
    }

    /// A checkpoint of a sibling chain (`ID.1`, another replica with the same key)
    /// verifies with the key's own public half, and a forged sibling does not.
    #[test]
    fn sibling_chains_verify_under_their_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (mut entries, _) = chain(3, &key);
        let sibling = format!("{}.1", chain_id(&key.verifying_key()));
        let mut prev = GENESIS.to_owned();
        for e in &mut entries {
            e.chain = sibling.clone();
            e.prev_hash = prev;
            e.hash = entry_hash(e);
            prev = e.hash.clone();
        }
        let last = &entries[2];
        let cp = sign_checkpoint(&key, &sibling, last.seq, &last.hash, &last.ts);
        let report = verify(&entries, std::slice::from_ref(&cp), None);
        assert!(report.ok, "{report:?}");
        let other = SigningKey::from_bytes(&[9; 32]);
        let forged = sign_checkpoint(&other, &sibling, last.seq, &last.hash, &last.ts);
        assert!(!verify(&entries, &[forged], None).ok);
    }

    #[test]
    fn pruned_entries_verify_by_linkage_and_are_reported() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (mut entries, cps) = chain(10, &key);
        for e in &mut entries[1..4] {
            prune_entry(e);
        }
        prune_entry(&mut entries[6]);
        for trusted in [None, Some(&key.verifying_key())] {
            let r = verify(&entries, &cps, trusted);
            assert!(r.ok, "{r:?}");
            assert_eq!((r.entries, r.pruned), (10, 4));
            assert_eq!(
                r.pruned_spans,
                vec![PrunedSpan {
                    chain: entries[0].chain.clone(),
                    first_seq: 2,
                    last_seq: 7,
                    entries: 4,
                    newest_ts: "2026-11-29T00:00:07Z".into(),
                }]
            );
        }
        let v = serde_json::to_value(verify(&entries, &cps, None)).unwrap();
        assert_eq!(v["pruned"], 4);
        assert_eq!(v["pruned_spans"][0]["first_seq"], 2);
        assert!(v["first_bad"].is_null());

        // The whole chain pruned, the checkpoints' entries included.
        let mut all = entries.clone();
        all.iter_mut().for_each(prune_entry);
        assert!(verify(&all, &cps, None).ok);
    }

    #[test]
    fn a_pruned_entry_must_be_anchored_by_a_signed_checkpoint() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (mut entries, cps) = chain(10, &key);
        prune_entry(&mut entries[6]);
        // Only the checkpoint at 5 remains: 7 is pruned after it.
        assert_eq!(
            reason(&verify(&entries, &cps[..1], None)),
            Some((7, "pruned_unanchored"))
        );
        assert_eq!(
            reason(&verify(&entries, &[], None)),
            Some((7, "pruned_unanchored"))
        );
        // A checkpoint at 10 that does not verify anchors nothing.
        let mut forged = cps.clone();
        forged[1].signature = forged[0].signature.clone();
        assert_eq!(
            reason(&verify(&entries, &forged, None)),
            Some((7, "pruned_unanchored"))
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            reason(&verify(&entries, &cps, Some(&other.verifying_key()))),
            Some((7, "pruned_unanchored")),
            "offline, only the given key anchors"
        );
        // Retention prunes only requests: an admin action without its payload is not
        // retention's doing.
        let (mut entries, _) = chain(10, &key);
        entries[2].kind = "key_created".into();
        rechain(&mut entries);
        let cps = vec![sign_checkpoint(
            &key,
            &entries[0].chain,
            10,
            &entries[9].hash,
            "2026-11-29T00:01:00Z",
        )];
        assert!(verify(&entries, &cps, None).ok);
        prune_entry(&mut entries[2]);
        assert_eq!(
            reason(&verify(&entries, &cps, None)),
            Some((3, "pruned_kind"))
        );
    }

    #[test]
    fn tampering_with_pruned_entries_is_still_named() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (mut entries, cps) = chain(10, &key);
        for e in &mut entries[1..4] {
            prune_entry(e);
        }
        let check = |edit: &dyn Fn(&mut Vec<AuditEntry>)| {
            let mut edited = entries.clone();
            edit(&mut edited);
            reason(&verify(&edited, &cps, None)).map(|(s, r)| (s, r.to_owned()))
        };
        let bad = |seq: i64, reason: &str| Some((seq, reason.to_owned()));
        // 4 is pruned and followed by 5, which still has its payload: 5's hash seals the
        // hash it links to, so 4's hash is what changed.
        assert_eq!(check(&|l| l[3].hash = "ab".repeat(32)), bad(4, "changed"));
        // 3 is followed by the pruned 4: which of the two changed cannot be told.
        assert_eq!(
            check(&|l| l[2].hash = "ab".repeat(32)),
            bad(4, "inserted_or_reordered")
        );
        assert_eq!(
            check(&|l| l[2].prev_hash = "ab".repeat(32)),
            bad(3, "inserted_or_reordered")
        );
        // A pruned entry's hash and the next link both rewritten: the next entry's
        // content no longer matches.
        assert_eq!(
            check(&|l| {
                l[3].hash = "ab".repeat(32);
                l[4].prev_hash = "ab".repeat(32);
            }),
            bad(5, "changed")
        );
        // The last entry pruned and its hash rewritten: the checkpoint disagrees.
        assert_eq!(
            check(&|l| {
                prune_entry(&mut l[9]);
                l[9].hash = "ab".repeat(32);
            }),
            bad(10, "checkpoint_mismatch")
        );
        // A pruned mark does not shield a payload that is still there.
        assert_eq!(
            check(&|l| {
                l[5].pruned = true;
                l[5].payload = json!({"forged": true});
            }),
            bad(6, "changed")
        );
        // Removing a pruned entry is still a gap.
        assert_eq!(
            check(&|l| {
                l.remove(2);
            }),
            bad(3, "removed")
        );
    }

    #[test]
    fn an_inserted_entry_is_named_itself() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (entries, cps) = chain(10, &key);
        // A forged entry with a plausible hash at seq 4, the later seqs shifted up.
        let mut inserted = entries.clone();
        let mut forged = inserted[3].clone();
        forged.prev_hash = inserted[2].hash.clone();
        forged.payload = json!({"forged": true});
        forged.hash = entry_hash(&forged);
        for e in &mut inserted[3..] {
            e.seq += 1;
        }
        inserted.insert(3, forged.clone());
        assert_eq!(
            reason(&verify(&inserted, &cps, None)),
            Some((4, "inserted_or_reordered"))
        );
        // Before the first entry.
        let mut first = forged.clone();
        first.seq = 1;
        first.prev_hash = GENESIS.into();
        first.hash = entry_hash(&first);
        let mut before = entries.clone();
        for e in &mut before {
            e.seq += 1;
        }
        before.insert(0, first);
        assert_eq!(
            reason(&verify(&before, &cps, None)),
            Some((1, "inserted_or_reordered"))
        );
        // Appended after the last checkpoint with a wrong prev_hash: a made-up one, or
        // the hash before the head (the signed head is not taken for an insertion).
        for prev_hash in ["ab".repeat(32), entries[8].hash.clone()] {
            let mut appended = entries.clone();
            let mut tail = forged.clone();
            tail.seq = 11;
            tail.prev_hash = prev_hash;
            tail.hash = entry_hash(&tail);
            appended.push(tail);
            assert_eq!(
                reason(&verify(&appended, &cps, None)),
                Some((11, "inserted_or_reordered"))
            );
        }
    }

    #[test]
    fn pruned_entries_round_trip_through_an_export() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let (mut entries, cps) = chain(4, &key);
        prune_entry(&mut entries[0]);
        let line = serde_json::to_string(&ExportLine::Entry(entries[0].clone())).unwrap();
        assert!(line.contains("\"pruned\":true") && line.contains("\"payload\":null"));
        let kept = serde_json::to_string(&ExportLine::Entry(entries[1].clone())).unwrap();
        assert!(
            !kept.contains("pruned"),
            "unpruned lines are as before: {kept}"
        );
        let text = format!("{line}\n{kept}\n");
        let (read, _) = read_export(&text).unwrap();
        assert_eq!(read, entries[..2].to_vec());
        let r = verify(&entries, &cps, Some(&key.verifying_key()));
        assert!(r.ok && r.pruned == 1, "{r:?}");
    }

    fn at(ts: &str) -> SystemTime {
        humantime::parse_rfc3339(ts).unwrap()
    }

    async fn store_with_chain() -> (crate::store::Store, Auditor) {
        let store = crate::store::Store::open("sqlite::memory:").await.unwrap();
        let audit = Auditor::open(store.clone(), SigningKey::from_bytes(&[5; 32]))
            .await
            .unwrap();
        let item = |day: u32, kind: &str| {
            (
                format!("2026-01-{day:02}T00:00:00.000Z"),
                kind.to_owned(),
                "gateway".to_owned(),
                Some("t".to_owned()),
                json!({"day": day}),
            )
        };
        // 1..=4 old requests and an admin action, signed; 6 old and unsigned; 7 recent.
        audit
            .append(vec![
                item(1, "request"),
                item(2, "key_created"),
                item(3, "request"),
                item(4, "request"),
            ])
            .await
            .unwrap();
        audit.append(vec![item(5, "request")]).await.unwrap();
        audit.checkpoint().await.unwrap();
        audit
            .append(vec![item(6, "request"), item(28, "request")])
            .await
            .unwrap();
        let rows: Vec<_> = [1, 3, 6, 28]
            .iter()
            .map(|d| {
                (
                    format!("r{d}"),
                    format!("2026-01-{d:02}T00:00:00.000Z"),
                    Some("t".to_owned()),
                    "ok".to_owned(),
                    "{}".to_owned(),
                )
            })
            .collect();
        store.add_records(&rows).await.unwrap();
        (store, audit)
    }

    /// A write whose answer was lost after its commit (the connection broke) is taken
    /// as stored when the chain's stored head is what it wrote: trying it again would
    /// fail forever on the rows already there. One whose entries are not there stays
    /// failed, with the head unmoved.
    #[tokio::test]
    async fn a_write_that_failed_after_its_commit_moves_the_head_and_one_before_does_not() {
        let store = crate::store::Store::open("sqlite::memory:").await.unwrap();
        let audit = Auditor::open(store.clone(), SigningKey::from_bytes(&[6; 32]))
            .await
            .unwrap();
        let item = || {
            (
                "2026-01-01T00:00:00.000Z".to_owned(),
                "request".to_owned(),
                "gateway".to_owned(),
                None,
                json!({"n": 1}),
            )
        };
        audit.append(vec![item()]).await.unwrap();
        let (seq, hash) = store.audit_head(&audit.chain()).await.unwrap().unwrap();
        let lost = || Err(crate::store::StoreError::Open("connection reset".into()));

        // As if the commit of entry 1 had lost its answer: the head is where it wrote.
        let mut head = audit.head.lock().await;
        (head.seq, head.hash) = (0, GENESIS.to_owned());
        audit
            .settle(&mut head, lost(), seq, hash.clone())
            .await
            .unwrap();
        assert_eq!((head.seq, head.hash.as_str()), (1, hash.as_str()));

        // Entry 2 never reached the store: still failed, head unmoved.
        let e = audit.settle(&mut head, lost(), 2, "f".repeat(64)).await;
        assert!(e.is_err());
        assert_eq!(head.seq, 1);
        drop(head);
        audit.append(vec![item()]).await.unwrap();
        let entries = store.audit_entries(None, None).await.unwrap();
        assert_eq!(entries.len(), 2);
        assert!(verify(&entries, &[], None).ok);
    }

    /// Records whose write was committed but reported failed are not written again
    /// when the writer tries the batch once more (with new records behind them).
    #[tokio::test]
    async fn records_of_a_write_whose_answer_was_lost_are_not_written_twice() {
        let store = crate::store::Store::open("sqlite::memory:").await.unwrap();
        let audit = Auditor::open(store.clone(), SigningKey::from_bytes(&[7; 32]))
            .await
            .unwrap();
        let row = |i: u32| {
            (
                format!("req-{i}"),
                "2026-12-03T00:00:00.000Z".to_owned(),
                Some("t".to_owned()),
                "success".to_owned(),
                format!("{{\"n\":{i}}}"),
            )
        };
        let first: Vec<_> = (0..3).map(row).collect();
        audit.append_records(&first).await.unwrap();
        // As if that commit's answer had been lost: the writer still holds the rows.
        {
            let mut head = audit.head.lock().await;
            (head.seq, head.hash) = (0, GENESIS.to_owned());
            head.unsure = true;
        }
        let again: Vec<_> = (0..5).map(row).collect();
        let mut skipped: Vec<String> = audit
            .append_records(&again)
            .await
            .unwrap()
            .into_keys()
            .collect();
        skipped.sort();
        assert_eq!(
            skipped,
            ["req-0", "req-1", "req-2"],
            "told which were stored"
        );
        let entries = store.audit_entries(None, None).await.unwrap();
        assert_eq!(
            entries.len(),
            5,
            "req-0..2 once, req-3 and req-4 after them"
        );
        assert!(verify(&entries, &[], None).ok);
        assert_eq!(audit.head.lock().await.seq, 5);
    }

    #[tokio::test]
    async fn prune_drops_old_request_payloads_up_to_the_last_checkpoint() {
        let (store, audit) = store_with_chain().await;
        // Retention 10 days on Jan 20: before Jan 10.
        let done = prune(&store, 10, at("2026-01-20T00:00:00Z")).await.unwrap();
        assert_eq!(
            (done.records, done.payloads, done.before.as_str()),
            (3, 4, "2026-01-10T00:00:00.000Z")
        );
        assert!(done.refused.is_empty());
        assert!(store.record("r28").await.unwrap().is_some());
        assert!(store.record("r6").await.unwrap().is_none());
        let entries = store.audit_entries(None, None).await.unwrap();
        let pruned: Vec<i64> = entries.iter().filter(|e| e.pruned).map(|e| e.seq).collect();
        assert_eq!(
            pruned,
            vec![1, 3, 4, 5],
            "not the admin action, not after the checkpoint"
        );
        assert!(
            entries
                .iter()
                .filter(|e| e.pruned)
                .all(|e| e.payload.is_null())
        );
        assert_eq!(entries[5].payload, json!({"day": 6}), "unsigned: kept");
        let r = verify_store(&store).await.unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(
            (
                r.pruned,
                r.pruned_spans[0].first_seq,
                r.pruned_spans[0].last_seq
            ),
            (4, 1, 5)
        );

        // Idempotent; once signed, 6 goes too, and the chain goes on from its head.
        assert_eq!(
            prune(&store, 10, at("2026-01-20T00:00:00Z"))
                .await
                .unwrap()
                .payloads,
            0
        );
        audit.checkpoint().await.unwrap();
        let again = prune(&store, 10, at("2026-01-20T00:00:00Z")).await.unwrap();
        assert_eq!((again.records, again.payloads), (0, 1));
        audit
            .append(vec![(
                "2026-01-29T00:00:00.000Z".into(),
                "request".into(),
                "gateway".into(),
                None,
                json!({}),
            )])
            .await
            .unwrap();
        let r = verify_store(&store).await.unwrap();
        assert!(r.ok && r.pruned == 5 && r.entries == 8, "{r:?}");
        // A retention too long to reach back before the epoch prunes nothing.
        assert_eq!(
            prune(&store, u64::MAX, SystemTime::now()).await.unwrap(),
            Pruned::default()
        );
    }

    #[tokio::test]
    async fn prune_refuses_a_span_that_does_not_verify() {
        let (store, _audit) = store_with_chain().await;
        store
            .execute_unchecked("UPDATE audit_entries SET payload = '{\"day\":99}' WHERE seq = 3")
            .await
            .unwrap();
        let done = prune(&store, 10, at("2026-01-20T00:00:00Z")).await.unwrap();
        assert_eq!(done.payloads, 0, "pruning would erase the evidence");
        assert_eq!(done.records, 3, "records are not evidence: they go");
        let p = &done.refused[0];
        assert_eq!((p.seq, p.reason.as_str()), (3, "changed"));
        let r = verify_store(&store).await.unwrap();
        assert_eq!(reason(&r), Some((3, "changed")));
        assert_eq!(r.pruned, 0);
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

    /// The hash written around a payload's text is the hash of the canonical value.
    #[test]
    fn the_text_hash_equals_the_canonical_value_hash() {
        for tenant in [None, Some("t\"\\x\u{e9}\n".to_owned())] {
            let e = AuditEntry {
                chain: "c\u{1}".into(),
                seq: 42,
                ts: "2026-12-01T00:00:00.000Z".into(),
                kind: "request".into(),
                actor: "gate\"way".into(),
                tenant,
                payload: json!({"z": [1, 2.5, null], "a": {"y": "\u{2028}", "b": true}}),
                prev_hash: GENESIS.into(),
                hash: String::new(),
                pruned: false,
            };
            let content = json!({
                "chain": e.chain, "seq": e.seq, "ts": e.ts, "kind": e.kind,
                "actor": e.actor, "tenant": e.tenant, "payload": e.payload,
            });
            let mut h = Sha256::new();
            h.update(e.prev_hash.as_bytes());
            h.update(content.to_string().as_bytes());
            assert_eq!(entry_hash(&e), hex(&h.finalize()));
        }
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
                pruned: false,
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
