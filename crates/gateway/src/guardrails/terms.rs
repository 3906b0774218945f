//! Blocked terms: one Aho-Corasick automaton over all of a tenant's terms, matched
//! case-insensitively and as whole words only.
//!
//! A hit counts when the characters on both sides of it are not word characters
//! (alphanumeric or `_`), so `orion` does not match `orionis` but does match `Project-Orion`,
//! and the term `project-orion` matches `Project-Orion`. ASCII terms are matched
//! ASCII-case-insensitively on the text as is; when any term has non-ASCII letters, terms
//! and text are lowercased (Unicode) first.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

#[derive(Debug, Clone)]
pub(crate) struct BlockedTerms {
    automaton: AhoCorasick,
    /// Some term is not ASCII: search the Unicode-lowercased text.
    lowercase: bool,
}

impl BlockedTerms {
    /// `None` for an empty list. Err names the offending entry.
    pub(crate) fn new(terms: &[String]) -> Result<Option<Self>, String> {
        if terms.is_empty() {
            return Ok(None);
        }
        let lowercase = terms.iter().any(|t| !t.is_ascii());
        let mut patterns = Vec::with_capacity(terms.len());
        for (i, term) in terms.iter().enumerate() {
            let term = term.trim();
            if term.is_empty() {
                return Err(format!(
                    "guardrails.blocked_terms[{i}]: a blocked term must not be empty"
                ));
            }
            patterns.push(if lowercase {
                term.to_lowercase()
            } else {
                term.to_owned()
            });
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .map_err(|e| format!("guardrails.blocked_terms: {e}"))?;
        Ok(Some(Self {
            automaton,
            lowercase,
        }))
    }

    /// Number of whole-word occurrences of any term in `text` (overlapping hits count once
    /// each).
    pub(crate) fn count(&self, text: &str) -> u32 {
        if self.lowercase {
            self.count_in(&text.to_lowercase())
        } else {
            self.count_in(text)
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        self.count(text) > 0
    }

    fn count_in(&self, text: &str) -> u32 {
        let mut n = 0u32;
        for m in self.automaton.find_overlapping_iter(text) {
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            if !before.is_some_and(is_word) && !after.is_some_and(is_word) {
                n = n.saturating_add(1);
            }
        }
        n
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}
