//! A policy's detectors compiled into one [`RegexSet`]: a text is read once for all
//! of them, and only the patterns that matched are run again for their positions.
//! The `regex` crate guarantees time linear in the text for any pattern, a custom
//! one included: no backtracking blow-up on hostile input.
//!
//! Built-in patterns use ASCII classes (`[0-9]`, not `\d`, which would take other
//! scripts' digits) and ASCII word boundaries (`(?-u:\b)`: a Unicode one makes the
//! fast lazy DFA give up on any non-ASCII text); a candidate then passes a check
//! ([`super::checks`]) before it counts.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::checks;

/// Compiled size limit per pattern, and for the set: a custom pattern larger than
/// this is refused at load rather than slowing every request.
const SIZE_LIMIT: usize = 4 << 20;

/// What a detector looks for. Its name is what metadata and errors call it; its
/// label replaces what it found when the policy masks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Email,
    Phone,
    Card,
    Ssn,
    Iban,
    Ip,
    AwsAccessKey,
    PrivateKey,
    ApiKey,
    /// `regex[].name`.
    Custom(String),
    /// The `words` list.
    Words,
}

impl Kind {
    /// Its name in the configuration (`pii`, `secrets`) and in metadata.
    pub fn name(&self) -> &str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Ssn => "ssn",
            Kind::Iban => "iban",
            Kind::Ip => "ip",
            Kind::AwsAccessKey => "awsAccessKey",
            Kind::PrivateKey => "privateKey",
            Kind::ApiKey => "apiKey",
            Kind::Custom(name) => name,
            Kind::Words => "words",
        }
    }

    /// What replaces a finding when the policy masks.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Phone => "[PHONE]",
            Kind::Card => "[CARD]",
            Kind::Ssn => "[SSN]",
            Kind::Iban => "[IBAN]",
            Kind::Ip => "[IP]",
            Kind::AwsAccessKey | Kind::PrivateKey | Kind::ApiKey => "[SECRET]",
            Kind::Custom(_) | Kind::Words => "[REDACTED]",
        }
    }

    /// The `pii` entry named `name`.
    pub fn pii(name: &str) -> Option<Kind> {
        Some(match name {
            "email" => Kind::Email,
            "phone" => Kind::Phone,
            "card" => Kind::Card,
            "ssn" => Kind::Ssn,
            "iban" => Kind::Iban,
            "ip" => Kind::Ip,
            _ => return None,
        })
    }

    /// The `secrets` entry named `name`.
    pub fn secret(name: &str) -> Option<Kind> {
        Some(match name {
            "awsAccessKey" => Kind::AwsAccessKey,
            "privateKey" => Kind::PrivateKey,
            "apiKey" => Kind::ApiKey,
            _ => return None,
        })
    }

    /// The built-in pattern; `None` for custom patterns and words.
    fn pattern(&self) -> Option<&'static str> {
        Some(match self {
            // Any letters in the local part (the longest run before the `@`, so no
            // boundary before it); an ASCII domain.
            Kind::Email => {
                r"[\w.%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?-u:\b)"
            }
            // International (`+` and 7 to 15 digits) or North American (3-3-4).
            Kind::Phone => {
                r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}(?-u:\b)|(?:(?-u:\b)1[ .-]?)?(?:\([2-9][0-9]{2}\)|(?-u:\b)[2-9][0-9]{2})[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}(?-u:\b)"
            }
            // 13 to 19 digits, single spaces or dashes between them.
            Kind::Card => r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
            Kind::Ssn => {
                r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)|(?-u:\b)[0-9]{3} [0-9]{2} [0-9]{4}(?-u:\b)"
            }
            Kind::Iban => r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)",
            Kind::Ip => {
                r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?-u:\b)|(?-u:\b)[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?-u:\b)|::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4}(?-u:\b)"
            }
            Kind::AwsAccessKey => {
                r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?-u:\b)"
            }
            // A whole PEM block; without its end, the header and what follows it.
            Kind::PrivateKey => {
                r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,-]*)"
            }
            // OpenAI and Anthropic (`sk-...`), GitHub, Slack, Google, Stripe keys, and
            // JSON Web Tokens.
            Kind::ApiKey => {
                r"(?-u:\b)sk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{20,}|(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|[rs]k_(?:live|test)_[0-9A-Za-z]{16,}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
            }
            Kind::Custom(_) | Kind::Words => return None,
        })
    }

    /// Whether a candidate of this kind counts.
    fn check(&self, candidate: &str) -> bool {
        match self {
            Kind::Card => checks::luhn(candidate),
            Kind::Iban => checks::iban(candidate),
            Kind::Ssn => checks::ssn(candidate),
            Kind::Phone => checks::phone(candidate),
            Kind::Ip => checks::ip(candidate),
            _ => true,
        }
    }

    /// Where a too-long candidate may end instead: a card followed by an expiry
    /// date, an IBAN followed by a word in capitals. Its check may pass on a prefix
    /// that ends at a separator.
    fn retries_prefixes(&self) -> bool {
        matches!(self, Kind::Card | Kind::Iban)
    }
}

/// Why a detector could not be compiled: which one (its index in the order given),
/// and the message.
#[derive(Debug)]
pub struct CompileError {
    pub index: usize,
    pub message: String,
}

/// A policy's detectors, ready to run.
#[derive(Debug)]
pub struct Detectors {
    set: RegexSet,
    kinds: Vec<Kind>,
    regexes: Vec<Regex>,
}

/// Something a detector found: a byte range of the text, and which detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    /// Index into [`Detectors::kind`].
    pub detector: usize,
}

impl Detectors {
    /// Compiles `(kind, custom pattern)` pairs; built-in kinds bring their own
    /// pattern and take `None`. Words become one case-insensitive pattern.
    pub fn compile(detectors: Vec<(Kind, Option<String>)>) -> Result<Detectors, CompileError> {
        let mut kinds = Vec::with_capacity(detectors.len());
        let mut patterns = Vec::with_capacity(detectors.len());
        let mut regexes = Vec::with_capacity(detectors.len());
        for (index, (kind, custom)) in detectors.into_iter().enumerate() {
            let pattern = match (kind.pattern(), custom) {
                (Some(p), _) => p.to_string(),
                (None, Some(p)) => p,
                (None, None) => {
                    return Err(CompileError {
                        index,
                        message: "no pattern".into(),
                    })
                }
            };
            let regex = RegexBuilder::new(&pattern)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| CompileError {
                    index,
                    message: describe(&e),
                })?;
            if regex.is_match("") {
                return Err(CompileError {
                    index,
                    message: "the pattern matches the empty string".into(),
                });
            }
            kinds.push(kind);
            patterns.push(pattern);
            regexes.push(regex);
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(SIZE_LIMIT * 4)
            .build()
            .map_err(|e| CompileError {
                index: 0,
                message: describe(&e),
            })?;
        Ok(Detectors {
            set,
            kinds,
            regexes,
        })
    }

    /// The case-insensitive whole-word pattern of a word list. An edge that is an
    /// ASCII character gets an ASCII boundary, which keeps the lazy DFA on non-ASCII
    /// text; only a word that begins or ends with another letter needs Unicode's.
    pub fn words_pattern(words: &[String]) -> String {
        let edge = |c: Option<char>| match c {
            Some(c) if c.is_ascii() => r"(?-u:\b)",
            _ => r"\b",
        };
        let alternatives: Vec<String> = words
            .iter()
            .map(|w| w.trim())
            .map(|w| {
                let (l, r) = (edge(w.chars().next()), edge(w.chars().last()));
                format!("{l}{}{r}", regex::escape(w))
            })
            .collect();
        format!("(?i)(?:{})", alternatives.join("|"))
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn kind(&self, detector: usize) -> &Kind {
        &self.kinds[detector]
    }

    /// What the detectors find in `text`, in order, overlaps merged (the longer
    /// finding names the merged one): masking leaves nothing of either behind.
    pub fn find(&self, text: &str) -> Vec<Hit> {
        if self.kinds.is_empty() {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for detector in self.set.matches(text).iter() {
            let kind = &self.kinds[detector];
            for m in self.regexes[detector].find_iter(text) {
                if let Some(end) = checked_end(kind, m.as_str()) {
                    hits.push(Hit {
                        start: m.start(),
                        end: m.start() + end,
                        detector,
                    });
                }
            }
        }
        merge(hits)
    }
}

/// The length of the candidate's part that counts: all of it, or for kinds that
/// retry, its longest prefix ending before a separator that passes the check.
fn checked_end(kind: &Kind, candidate: &str) -> Option<usize> {
    if kind.check(candidate) {
        return Some(candidate.len());
    }
    if !kind.retries_prefixes() {
        return None;
    }
    candidate
        .char_indices()
        .rev()
        .filter(|(_, c)| *c == ' ' || *c == '-')
        .map(|(i, _)| i)
        .find(|&i| kind.check(&candidate[..i]))
}

/// Sorted, overlapping hits merged.
fn merge(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut out: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        match out.last_mut() {
            Some(last) if h.start < last.end => {
                if h.end - h.start > last.end - last.start {
                    last.detector = h.detector;
                }
                last.end = last.end.max(h.end);
            }
            _ => out.push(h),
        }
    }
    out
}

/// `text` with every hit replaced by its detector's label.
pub fn mask(text: &str, hits: &[Hit], detectors: &Detectors) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for h in hits {
        out.push_str(&text[at..h.start]);
        out.push_str(detectors.kind(h.detector).label());
        at = h.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A regex error in one line (the crate's spans several, with a caret).
fn describe(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => "the pattern compiles too large".into(),
        other => other
            .to_string()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(kinds: &[Kind]) -> Detectors {
        Detectors::compile(kinds.iter().map(|k| (k.clone(), None)).collect()).unwrap()
    }

    fn found(d: &Detectors, text: &str) -> Vec<(String, String)> {
        d.find(text)
            .iter()
            .map(|h| {
                (
                    d.kind(h.detector).name().to_string(),
                    text[h.start..h.end].to_string(),
                )
            })
            .collect()
    }

    fn one(kind: Kind, text: &str) -> Vec<String> {
        let d = builtin(&[kind]);
        found(&d, text).into_iter().map(|(_, s)| s).collect()
    }

    #[test]
    fn email() {
        assert_eq!(
            one(Kind::Email, "write to alice.smith+ai@example.co.uk, please"),
            ["alice.smith+ai@example.co.uk"]
        );
        assert_eq!(one(Kind::Email, "(bob@corp.example)"), ["bob@corp.example"]);
        // No domain with a top-level part, or none at all: not an address.
        assert!(one(Kind::Email, "user@localhost and @handle and a@b.c").is_empty());
    }

    #[test]
    fn card_needs_luhn() {
        assert_eq!(
            one(Kind::Card, "card 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            one(Kind::Card, "4111-1111-1111-1111"),
            ["4111-1111-1111-1111"]
        );
        assert!(one(Kind::Card, "card 4111 1111 1111 1112 ok").is_empty());
        assert!(one(Kind::Card, "order 1234567890123456").is_empty());
        // A valid card followed by more digits: the card still counts.
        assert_eq!(
            one(Kind::Card, "4111 1111 1111 1111 1228"),
            ["4111 1111 1111 1111"]
        );
    }

    #[test]
    fn iban_needs_its_checksum() {
        assert_eq!(
            one(Kind::Iban, "pay DE89 3704 0044 0532 0130 00 today"),
            ["DE89 3704 0044 0532 0130 00"]
        );
        assert_eq!(
            one(Kind::Iban, "GB82WEST12345698765432"),
            ["GB82WEST12345698765432"]
        );
        assert!(one(Kind::Iban, "pay DE88 3704 0044 0532 0130 00 today").is_empty());
        assert!(one(Kind::Iban, "AB12CDEFGHIJKLMNOP").is_empty());
    }

    #[test]
    fn ssn_phone_ip() {
        assert_eq!(one(Kind::Ssn, "ssn 123-45-6789."), ["123-45-6789"]);
        assert!(one(Kind::Ssn, "ssn 666-45-6789, 2024-01-15").is_empty());
        assert_eq!(
            one(Kind::Phone, "call (415) 555-2671 now"),
            ["(415) 555-2671"]
        );
        assert_eq!(
            one(Kind::Phone, "call +44 20 7946 0958"),
            ["+44 20 7946 0958"]
        );
        assert!(one(Kind::Phone, "version 1.2.3, year 2024, +1").is_empty());
        assert_eq!(
            one(Kind::Ip, "from 10.0.12.7 and 2001:db8::1"),
            ["10.0.12.7", "2001:db8::1"]
        );
        assert!(one(Kind::Ip, "at 10:30:00, 999.1.1.1").is_empty());
    }

    #[test]
    fn secrets() {
        assert_eq!(
            one(Kind::AwsAccessKey, "key=AKIAIOSFODNN7EXAMPLE;"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert!(one(Kind::AwsAccessKey, "AKIAshort").is_empty());
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc=\n-----END RSA PRIVATE KEY-----";
        assert_eq!(one(Kind::PrivateKey, &format!("here: {pem} done")), [pem]);
        assert_eq!(
            one(Kind::ApiKey, "use sk-proj-abcdefghijklmnopqrstuvwx1234 and ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            ["sk-proj-abcdefghijklmnopqrstuvwx1234", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"]
        );
        assert!(one(Kind::ApiKey, "task-list and sk-short").is_empty());
    }

    #[test]
    fn words_are_whole_and_case_blind() {
        let d = Detectors::compile(vec![(
            Kind::Words,
            Some(Detectors::words_pattern(&[
                "Project Falcon".into(),
                "zeta".into(),
            ])),
        )])
        .unwrap();
        assert_eq!(
            found(&d, "about PROJECT falcon and Zeta."),
            [
                ("words".into(), "PROJECT falcon".into()),
                ("words".into(), "Zeta".into())
            ]
        );
        assert!(found(&d, "zetas and falcon").is_empty());
    }

    #[test]
    fn non_ascii_text_around_findings() {
        let d = builtin(&[Kind::Email, Kind::Card]);
        let text = "écrivez à zoë@example.fr — carte 4111111111111111€";
        assert_eq!(
            found(&d, text),
            [
                ("email".to_string(), "zoë@example.fr".to_string()),
                ("card".to_string(), "4111111111111111".to_string()),
            ]
        );
        let hits = d.find(text);
        assert_eq!(mask(text, &hits, &d), "écrivez à [EMAIL] — carte [CARD]€");
    }

    #[test]
    fn overlaps_merge_and_mask_leaves_nothing() {
        let d = builtin(&[Kind::Phone, Kind::Card, Kind::Email]);
        let text = "card 4111 1111 1111 1111, mail x@example.com";
        let hits = d.find(text);
        assert_eq!(mask(text, &hits, &d), "card [CARD], mail [EMAIL]");
    }

    #[test]
    fn a_hostile_input_finishes() {
        // Exponential for a backtracking engine; linear here.
        let d =
            Detectors::compile(vec![(Kind::Custom("evil".into()), Some("(a+)+$".into()))]).unwrap();
        let mut text = "a".repeat(100 * 1024);
        text.push('!');
        assert!(d.find(&text).is_empty());
        let d = Detectors::compile(vec![(Kind::Custom("evil".into()), Some("(a|aa)+b".into()))])
            .unwrap();
        assert!(d.find(&text).is_empty());
    }

    #[test]
    fn bad_patterns_are_refused() {
        let e = Detectors::compile(vec![
            (Kind::Email, None),
            (Kind::Custom("x".into()), Some("(unclosed".into())),
        ])
        .unwrap_err();
        assert_eq!(e.index, 1);
        let e =
            Detectors::compile(vec![(Kind::Custom("x".into()), Some("a*".into()))]).unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
    }
}
