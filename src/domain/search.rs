//! Turning what an agent types into a full-text query over message bodies.
//!
//! Message bodies are indexed by `kefu_search_vector(body)` (migration
//! 2026-12-04-000600_workflow): English words, stemmed, plus overlapping bigrams of every
//! run of CJK characters. A query is split the same way: its non-CJK text goes to
//! `websearch_to_tsquery('english', …)` (quotes, `or`, `-word` work as on the web), its CJK
//! runs become their bigrams, all required (`退款问题` → `退款 & 款问 & 问题`); a lone
//! CJK character matches any bigram that starts with it.

/// The two halves of a query; `None` when the half is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQuery {
    /// For `websearch_to_tsquery('english', …)`.
    pub words: Option<String>,
    /// For `to_tsquery('simple', …)`: quoted CJK bigrams joined by `&`.
    pub cjk: Option<String>,
}

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// The CJK ranges the index splits into bigrams (kana, CJK ideographs and extension A,
/// Hangul syllables, compatibility ideographs) — the same class as the SQL function.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff)
}

/// Splits a query; `None` when nothing searchable is left.
pub fn parse(q: &str) -> Option<TextQuery> {
    let mut words = String::with_capacity(q.len());
    let mut runs: Vec<Vec<char>> = Vec::new();
    let mut run: Vec<char> = Vec::new();
    for c in q.chars() {
        if is_cjk(c) {
            run.push(c);
            continue;
        }
        if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
            // A CJK run splits the words around it, like white space.
            words.push(' ');
        }
        // Control characters have no business in a query.
        words.push(if c.is_control() { ' ' } else { c });
    }
    if !run.is_empty() {
        runs.push(run);
    }
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut terms: Vec<String> = Vec::new();
    for r in &runs {
        if r.len() == 1 {
            terms.push(format!("'{}':*", r[0]));
        } else {
            for pair in r.windows(2) {
                let t = format!("'{}{}'", pair[0], pair[1]);
                if !terms.contains(&t) {
                    terms.push(t);
                }
            }
        }
    }
    let out = TextQuery {
        words: (!words.is_empty()).then_some(words),
        cjk: (!terms.is_empty()).then(|| terms.join(" & ")),
    };
    (out.words.is_some() || out.cjk.is_some()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_only() {
        assert_eq!(
            parse("  refund   my order "),
            Some(TextQuery {
                words: Some("refund my order".into()),
                cjk: None
            })
        );
    }

    #[test]
    fn chinese_becomes_bigrams() {
        assert_eq!(
            parse("退款"),
            Some(TextQuery {
                words: None,
                cjk: Some("'退款'".into())
            })
        );
        assert_eq!(
            parse("退款问题").and_then(|q| q.cjk).as_deref(),
            Some("'退款' & '款问' & '问题'")
        );
        assert_eq!(parse("退").and_then(|q| q.cjk).as_deref(), Some("'退':*"));
    }

    #[test]
    fn mixed_and_empty() {
        let q = parse("order 12345 退款").expect("query");
        assert_eq!(q.words.as_deref(), Some("order 12345"));
        assert_eq!(q.cjk.as_deref(), Some("'退款'"));
        assert_eq!(
            parse("退款abc").and_then(|q| q.words).as_deref(),
            Some("abc")
        );
        assert_eq!(parse("   "), None);
        assert_eq!(parse("\u{0}"), None);
    }
}
