//! PII detection: candidates found by bounded regexes, then validated (Luhn, mod-97, SSN
//! ranges, `std::net` parsing, boundary and shape checks) before they count.
//!
//! Heuristics, per type (in priority order: where two accepted values overlap, the earlier
//! type in this list wins):
//!
//! - **email**: `local@domain.tld`, local part 1–64 of `[A-Za-z0-9._%+-]` not starting or
//!   ending with a dot and without `..`, 1–6 domain labels (LDH, ≤ 63 chars each) and an
//!   alphabetic TLD of 2–24 letters. The character before must not be a local-part character
//!   and the one after must not continue the domain.
//! - **iban**: two letters + two digits + 11–30 alphanumerics, optionally grouped by single
//!   spaces every 4; the country must be in the ISO 13616 registry table below, the length
//!   must be that country's, and the mod-97 checksum must be 1.
//! - **card**: 13–19 digits, either contiguous or in groups of 3–6 separated by one space or
//!   dash; first digit non-zero, not all the same digit, Luhn-valid. When the regex
//!   candidate runs longer (trailing digit groups), the longest Luhn-valid prefix of whole
//!   groups is taken.
//! - **ssn**: `AAA-GG-SSSS` only, area not 000, 666 or 900–999, group not 00, serial not 0000.
//! - **ip**: IPv4 dotted quads that `Ipv4Addr` parses (so each octet ≤ 255, no leading
//!   zeros); IPv6 that `Ipv6Addr` parses with at least two non-empty groups and a digit
//!   somewhere (so `a::b`, `std::fmt`, MAC addresses and times are not IPs).
//! - **phone**: 7–15 digits in one of three shapes: international `+CC` followed by up to 6
//!   groups (separators space, dot or dash, an area code may be in parentheses, e.g.
//!   `+44 (0) 20 7946 0958`, `+33612345678`); North American `(555) 123-4567`,
//!   `555-123-4567`, `1-800-555-0199`; trunk-prefixed national numbers starting with `0`
//!   with at least one separator (`020 7946 0958`, `06 12 34 56 78`, `030-123456`). A run
//!   of digits without separators is never a phone (order numbers, card numbers), nor is a
//!   date-shaped (`2024-06-12`, `01.02.2024`) or SSN-shaped (`078-05-1120`) value, nor a
//!   national one glued by a space to a group of 3+ digits (`5500 0000 0000 0005`, a card
//!   failing Luhn). A greedy candidate that ran into a following number is cut back to its
//!   longest valid prefix of whole digit groups.
//!
//! Every numeric type also needs a numeric boundary: the value must not be glued to a
//! letter or digit, nor to `.`/`-` + digit (so `1.2.3.4.5` and `10.0.0.1-3` are not IPs),
//! and cards, SSNs and IPs must not follow a `+`.
//!
//! Every candidate regex is bounded ([`MAX_CANDIDATE_LEN`] bytes) and only the e-mail,
//! IPv6, SSN and IPv4 ones cannot contain whitespace; those that can (phone, card, IBAN)
//! are at most [`MAX_SPACED_LEN`] bytes long and have a digit before their first
//! whitespace. The stream redactor relies on both facts.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;

use super::Findings;

/// Longest byte span any candidate regex can match (the e-mail one: 64 + 1 + 6 × 64 + 24).
pub(crate) const MAX_CANDIDATE_LEN: usize = 480;
/// Longest byte span of a candidate that may contain whitespace (phone, card, IBAN).
pub(crate) const MAX_SPACED_LEN: usize = 48;

/// A PII type. The order is the priority when two accepted values overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Email,
    Iban,
    Card,
    Ssn,
    Ip,
    Phone,
}

impl Kind {
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Email,
        Kind::Iban,
        Kind::Card,
        Kind::Ssn,
        Kind::Ip,
        Kind::Phone,
    ];

    /// The name used in findings and violations.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Iban => "iban",
            Kind::Card => "card",
            Kind::Ssn => "ssn",
            Kind::Ip => "ip",
            Kind::Phone => "phone",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Iban => "IBAN",
            Kind::Card => "CARD",
            Kind::Ssn => "SSN",
            Kind::Ip => "IP",
            Kind::Phone => "PHONE",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One accepted PII value: a byte range of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Match {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

static EMAIL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(r"(?i)[a-z0-9._%+\-]{1,64}@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.){1,6}[a-z]{2,24}")
});
static IBAN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(r"(?i)\b[a-z]{2}[0-9]{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,4})?\b")
});
static CARD: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(r"\b[0-9](?:[ \-]?[0-9]){12,18}\b"));
static SSN: LazyLock<Option<Regex>> = LazyLock::new(|| compile(r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"));
static IPV4: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b"));
static IPV6: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-f]{1,4})?")
});
static PHONE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(concat!(
        // international
        r"\+[0-9]{1,3}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}",
        // North American
        r"|(?:1[ .\-])?(?:\([0-9]{3}\)[ .\-]?|[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}\b",
        // trunk-prefixed national
        r"|(?:\(0[0-9]{1,4}\)|0[0-9]{1,4})(?:[ .\-][0-9]{2,8}){1,4}\b",
    ))
});
static DATE_LIKE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(
        r"^(?:[0-9]{4}[\-./][0-9]{1,2}[\-./][0-9]{1,2}|[0-9]{1,2}[\-./][0-9]{1,2}[\-./][0-9]{2,4})$",
    )
});
static SSN_SHAPE: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$"));

/// The patterns are constants covered by a test; should one fail to compile, its type is
/// logged and skipped rather than panicking.
fn compile(pattern: &str) -> Option<Regex> {
    Regex::new(pattern)
        .map_err(|e| tracing::error!(error = %e, "guardrails: invalid built-in pattern"))
        .ok()
}

/// Accepted PII values of `text` at or after byte `from` (earlier bytes are context only),
/// sorted by start, non-overlapping.
pub(crate) fn detect(text: &str, from: usize) -> Vec<Match> {
    detect_with_spans(text, from).0
}

/// As [`detect`], plus the byte ranges of every candidate the scan looked at (accepted or
/// not), which the stream redactor must not cut through.
pub(crate) fn detect_with_spans(text: &str, from: usize) -> (Vec<Match>, Vec<(usize, usize)>) {
    let mut found = Vec::new();
    let mut spans = Vec::new();
    // Cheap pre-filters: most texts have no digit and no '@'.
    let has_digit = text.as_bytes()[from.min(text.len())..]
        .iter()
        .any(u8::is_ascii_digit);
    let has_at = text.as_bytes()[from.min(text.len())..].contains(&b'@');
    if has_at {
        scan(
            &EMAIL,
            text,
            from,
            Kind::Email,
            valid_email,
            &mut found,
            &mut spans,
        );
    }
    if has_digit {
        scan(
            &IBAN,
            text,
            from,
            Kind::Iban,
            valid_iban,
            &mut found,
            &mut spans,
        );
        scan(
            &CARD,
            text,
            from,
            Kind::Card,
            valid_card,
            &mut found,
            &mut spans,
        );
        scan(
            &SSN,
            text,
            from,
            Kind::Ssn,
            valid_ssn,
            &mut found,
            &mut spans,
        );
        scan(
            &IPV4,
            text,
            from,
            Kind::Ip,
            valid_ipv4,
            &mut found,
            &mut spans,
        );
        scan(
            &PHONE,
            text,
            from,
            Kind::Phone,
            valid_phone,
            &mut found,
            &mut spans,
        );
    }
    if text.as_bytes()[from.min(text.len())..].contains(&b':') {
        scan(
            &IPV6,
            text,
            from,
            Kind::Ip,
            valid_ipv6,
            &mut found,
            &mut spans,
        );
    }
    (resolve(found), spans)
}

type Validator = fn(&str, usize, usize) -> Option<usize>;

/// Walks the candidates of one regex left to right: an accepted value resumes the scan at
/// its end, a rejected candidate one character after its start.
fn scan(
    re: &Option<Regex>,
    text: &str,
    from: usize,
    kind: Kind,
    validate: Validator,
    found: &mut Vec<Match>,
    spans: &mut Vec<(usize, usize)>,
) {
    let Some(re) = re else {
        return;
    };
    let mut pos = from;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        if m.end() > m.start() {
            spans.push((m.start(), m.end()));
        }
        match validate(text, m.start(), m.end()) {
            Some(end) if end > m.start() => {
                found.push(Match {
                    start: m.start(),
                    end,
                    kind,
                });
                pos = end;
            }
            _ => pos = next_boundary(text, m.start()),
        }
    }
}

/// Keeps the highest-priority values where they overlap; sorted by start.
fn resolve(mut found: Vec<Match>) -> Vec<Match> {
    found.sort_by_key(|m| (m.kind, m.start));
    let mut kept: Vec<Match> = Vec::with_capacity(found.len());
    for m in found {
        if !kept.iter().any(|k| m.start < k.end && k.start < m.end) {
            kept.push(m);
        }
    }
    kept.sort_by_key(|m| m.start);
    kept
}

fn next_boundary(text: &str, i: usize) -> usize {
    text[i..]
        .chars()
        .next()
        .map_or(text.len() + 1, |c| i + c.len_utf8())
}

fn char_before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

fn char_at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|s| s.chars().next())
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_match(re: &Option<Regex>, v: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(v))
}

/// Nothing glued before a numeric value at `start`: no letter or digit, no `.`/`-` after a
/// digit, and no `+` unless allowed (an international phone owns its `+`).
fn left_ok(text: &str, start: usize, allow_plus: bool) -> bool {
    match char_before(text, start) {
        None => true,
        Some(p) if is_word(p) || (p == '+' && !allow_plus) => false,
        Some('.' | '-') => !char_before(text, start - 1).is_some_and(|c| c.is_ascii_digit()),
        Some(_) => true,
    }
}

/// Nothing glued after a numeric value ending at `end`: no letter or digit, no `.`/`-`
/// followed by a digit.
fn right_ok(text: &str, end: usize) -> bool {
    match char_at(text, end) {
        None => true,
        Some(n) if is_word(n) => false,
        Some('.' | '-') => !char_at(text, end + 1).is_some_and(|c| c.is_ascii_digit()),
        Some(_) => true,
    }
}

fn valid_email(text: &str, start: usize, end: usize) -> Option<usize> {
    let value = &text[start..end];
    let (local, _domain) = value.split_once('@')?;
    let local_char = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    if char_before(text, start).is_some_and(|c| local_char(c) || c == '@') {
        return None;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return None;
    }
    match char_at(text, end) {
        Some(c) if c.is_alphanumeric() || c == '-' || c == '_' || c == '@' => None,
        Some('.') if char_at(text, end + 1).is_some_and(|c| c.is_alphanumeric()) => None,
        _ => Some(end),
    }
}

fn valid_ssn(text: &str, start: usize, end: usize) -> Option<usize> {
    if !left_ok(text, start, false) || !right_ok(text, end) {
        return None;
    }
    let v = &text[start..end];
    let (area, group, serial) = (&v[0..3], &v[4..6], &v[7..11]);
    let bad = area == "000"
        || area == "666"
        || area.starts_with('9')
        || group == "00"
        || serial == "0000";
    (!bad).then_some(end)
}

fn valid_ipv4(text: &str, start: usize, end: usize) -> Option<usize> {
    if !left_ok(text, start, false) || !right_ok(text, end) {
        return None;
    }
    text[start..end].parse::<Ipv4Addr>().ok().map(|_| end)
}

fn valid_ipv6(text: &str, start: usize, end: usize) -> Option<usize> {
    if char_before(text, start).is_some_and(|c| is_word(c) || c == ':' || c == '.') {
        return None;
    }
    match char_at(text, end) {
        Some(c) if is_word(c) || c == ':' => return None,
        Some('.') if char_at(text, end + 1).is_some_and(|c| c.is_ascii_digit()) => return None,
        _ => {}
    }
    let v = &text[start..end];
    let groups = v.split([':', '.']).filter(|g| !g.is_empty()).count();
    if groups < 2 || !v.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<Ipv6Addr>().ok().map(|_| end)
}

fn valid_phone(text: &str, start: usize, end: usize) -> Option<usize> {
    let intl = text[start..end].starts_with('+');
    let left = if intl {
        !char_before(text, start).is_some_and(|c| is_word(c) || c == '+')
    } else {
        // Not glued by a space to a preceding group of 3+ digits (a longer number, such
        // as a card that failed Luhn).
        left_ok(text, start, false)
            && !(text[..start].ends_with(' ') && digits_before(text, start - 1) >= 3)
    };
    if !left {
        return None;
    }
    // The candidate, or a prefix of it ending after a digit group, longest first (a
    // greedy candidate may have run into a following number).
    let bytes = text.as_bytes();
    for e in (start + 1..=end).rev() {
        let last = bytes[e - 1];
        if !(last.is_ascii_digit() || last == b')') || bytes.get(e).is_some_and(u8::is_ascii_digit)
        {
            continue;
        }
        let v = &text[start..e];
        if v.matches('(').count() != v.matches(')').count() || !right_ok(text, e) {
            continue;
        }
        if !intl && text[e..].starts_with(' ') && digits_after(text, e + 1) >= 3 {
            continue;
        }
        let digits = v.bytes().filter(u8::is_ascii_digit).count();
        if (7..=15).contains(&digits) && !is_match(&DATE_LIKE, v) && !is_match(&SSN_SHAPE, v) {
            return Some(e);
        }
    }
    None
}

fn digits_before(text: &str, i: usize) -> usize {
    text.as_bytes()[..i]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

fn digits_after(text: &str, i: usize) -> usize {
    text.as_bytes()
        .get(i..)
        .map_or(0, |b| b.iter().take_while(|b| b.is_ascii_digit()).count())
}

fn valid_card(text: &str, start: usize, end: usize) -> Option<usize> {
    if !left_ok(text, start, false) {
        return None;
    }
    // Groups of digits: (digits, end byte of the group).
    let mut groups: Vec<(&str, usize)> = Vec::new();
    let mut gstart = start;
    for (i, b) in text[start..end].bytes().enumerate() {
        if b == b' ' || b == b'-' {
            groups.push((&text[gstart..start + i], start + i));
            gstart = start + i + 1;
        }
    }
    groups.push((&text[gstart..end], end));
    for k in (1..=groups.len()).rev() {
        let taken = &groups[..k];
        let gend = taken[k - 1].1;
        if k > 1 && taken.iter().any(|(g, _)| !(3..=6).contains(&g.len())) {
            continue;
        }
        if !right_ok(text, gend) {
            continue;
        }
        let digits: Vec<u8> = taken
            .iter()
            .flat_map(|(g, _)| g.bytes())
            .map(|b| b - b'0')
            .collect();
        if !(13..=19).contains(&digits.len()) || digits[0] == 0 {
            continue;
        }
        if digits.iter().all(|&d| d == digits[0]) || !luhn(&digits) {
            continue;
        }
        return Some(gend);
    }
    None
}

/// The Luhn (mod 10) checksum of a card number.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn valid_iban(text: &str, start: usize, end: usize) -> Option<usize> {
    // Alphanumerics of the candidate with the byte end of each.
    let chars: Vec<(u8, usize)> = text[start..end]
        .bytes()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_alphanumeric())
        .map(|(i, b)| (b.to_ascii_uppercase(), start + i + 1))
        .collect();
    let country = [chars.first()?.0, chars.get(1)?.0];
    let len = iban_length(&country)?;
    let (_, iend) = *chars.get(len - 1)?;
    if char_at(text, iend).is_some_and(|c| c.is_alphanumeric()) {
        return None;
    }
    let compact: Vec<u8> = chars[..len].iter().map(|(b, _)| *b).collect();
    mod97_ok(&compact).then_some(iend)
}

/// ISO 13616: move the first four characters to the end, letters become 10..35, the
/// number mod 97 must be 1.
pub(crate) fn mod97_ok(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// IBAN length per country (ISO 13616 registry), `CCnn` entries.
const IBAN_LENGTHS: &str = "\
     AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 \
     DE22 DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 \
     GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 \
     LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 \
     PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 \
     SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30";

fn iban_length(country: &[u8; 2]) -> Option<usize> {
    IBAN_LENGTHS
        .split_ascii_whitespace()
        .find(|e| e.as_bytes().get(..2) == Some(&country[..]))
        .and_then(|e| e.get(2..)?.parse().ok())
}

/// The key under which equal values share a placeholder.
fn normalize(kind: Kind, value: &str) -> String {
    match kind {
        Kind::Email => value.to_ascii_lowercase(),
        Kind::Iban => value
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        Kind::Card | Kind::Ssn => value.chars().filter(char::is_ascii_digit).collect(),
        Kind::Phone => value
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect(),
        Kind::Ip => value
            .parse::<std::net::IpAddr>()
            .map_or_else(|_| value.to_ascii_lowercase(), |ip| ip.to_string()),
    }
}

/// Placeholder numbering and findings of one request or one response.
#[derive(Debug, Default)]
pub(crate) struct PiiState {
    ids: HashMap<(Kind, String), u32>,
    next: [u32; Kind::ALL.len()],
    pub findings: Findings,
}

impl PiiState {
    fn count(&mut self, kind: Kind) {
        *self.findings.pii.entry(kind.name()).or_insert(0) += 1;
    }

    fn placeholder(&mut self, kind: Kind, value: &str) -> String {
        let key = (kind, normalize(kind, value));
        let n = match self.ids.get(&key) {
            Some(n) => *n,
            None => {
                let slot = &mut self.next[kind.index()];
                *slot += 1;
                let n = *slot;
                self.ids.insert(key, n);
                n
            }
        };
        format!("[{}_{n}]", kind.label())
    }

    /// Counts the `matches` (offsets into `text`, all inside `range`) and, when `rewrite`,
    /// appends `text[range]` with each value replaced by its placeholder to `out`.
    pub(crate) fn apply(
        &mut self,
        text: &str,
        range: std::ops::Range<usize>,
        matches: &[Match],
        rewrite: bool,
        out: &mut String,
    ) {
        let mut last = range.start;
        for m in matches {
            self.count(m.kind);
            if rewrite {
                out.push_str(&text[last..m.start]);
                let ph = self.placeholder(m.kind, &text[m.start..m.end]);
                out.push_str(&ph);
                last = m.end;
            }
        }
        if rewrite {
            out.push_str(&text[last..range.end]);
        }
    }

    /// Scans `text`; returns its redacted form when `rewrite` and something was found.
    pub(crate) fn process(&mut self, text: &str, rewrite: bool) -> Option<String> {
        let matches = detect(text, 0);
        if matches.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        self.apply(text, 0..text.len(), &matches, rewrite, &mut out);
        rewrite.then_some(out)
    }

    /// Scans tool-call arguments. When they are valid JSON, each string value is scanned
    /// on its own, unescaped (so an escape like `\n` does not glue to a value), and a
    /// redacted value is spliced back re-escaped: keys, order and formatting are kept.
    /// Otherwise the arguments are scanned as plain text.
    pub(crate) fn process_json(&mut self, args: &str, rewrite: bool) -> Option<String> {
        if serde_json::from_str::<serde::de::IgnoredAny>(args).is_err() {
            return self.process(args, rewrite);
        }
        let bytes = args.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'"' {
                i += 1;
                continue;
            }
            // A string literal: find its closing quote.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(bytes.len());
            let is_key = args[end..].trim_start().starts_with(':');
            if !is_key
                && let Ok(value) = serde_json::from_str::<String>(&args[i..end])
                && let Some(new) = self.process(&value, rewrite)
                && let Ok(quoted) = serde_json::to_string(&new)
            {
                out.push_str(&args[copied..i]);
                out.push_str(&quoted);
                copied = end;
            }
            i = end;
        }
        if copied == 0 {
            return None;
        }
        out.push_str(&args[copied..]);
        Some(out)
    }
}
