//! Recall of older messages: Okapi BM25 over the messages outside the active window, the query
//! being the latest user message (`context.md` step 5).

use crate::util::words::{bm25_weight, each_token, tokenize};

/// Messages scoring at or below this are left out, unless none scores above it.
const MIN_SCORE: f64 = 0.1;

/// The indices of `documents` worth recalling for `query`, best first: those scoring above
/// 0.1, or all of them when none does. Ties keep the newer document first.
pub fn rank(query: &str, documents: &[&str]) -> Vec<usize> {
    if documents.is_empty() {
        return Vec::new();
    }
    let mut terms = tokenize(query);
    terms.sort();
    terms.dedup();
    let count = documents.len() as f64;
    // Which terms a token could be, by its length and first byte: most tokens of a document are
    // ruled out by two lookups. Past 64 terms every token is compared with every term.
    let mut by_length = [0u64; 64];
    let mut by_first = [0u64; 256];
    for (at, term) in terms.iter().enumerate().take(64) {
        by_length[term.len().min(63)] |= 1 << at;
        by_first[usize::from(term.as_bytes()[0])] |= 1 << at;
    }
    let many_terms = terms.len() > 64;
    // Per document: its length in tokens and how often each query term occurs in it.
    let mut buffer = String::new();
    let counted: Vec<(usize, Vec<u32>)> = documents
        .iter()
        .map(|text| {
            let mut length = 0;
            let mut frequencies = vec![0u32; terms.len()];
            each_token(text, &mut buffer, |token| {
                length += 1;
                let bytes = token;
                let mut maybe = by_length[bytes.len().min(63)] & by_first[usize::from(bytes[0])];
                while maybe != 0 {
                    let at = maybe.trailing_zeros() as usize;
                    if terms[at].as_bytes() == token {
                        frequencies[at] += 1;
                        return;
                    }
                    maybe &= maybe - 1;
                }
                if many_terms
                    && let Some(at) = terms
                        .iter()
                        .skip(64)
                        .position(|term| term.as_bytes() == token)
                {
                    frequencies[64 + at] += 1;
                }
            });
            (length, frequencies)
        })
        .collect();
    let average_length =
        (counted.iter().map(|(length, _)| *length).sum::<usize>() as f64 / count).max(1.0);
    let containing: Vec<f64> = (0..terms.len())
        .map(|at| {
            counted
                .iter()
                .filter(|(_, frequencies)| frequencies[at] > 0)
                .count() as f64
        })
        .collect();
    let mut scored: Vec<(usize, f64)> = counted
        .iter()
        .enumerate()
        .map(|(index, (length, frequencies))| {
            let score = frequencies
                .iter()
                .zip(&containing)
                .filter(|(frequency, _)| **frequency > 0)
                .map(|(frequency, n)| {
                    bm25_weight(*frequency, *n, count, *length as f64 / average_length)
                })
                .sum::<f64>();
            (index, score)
        })
        .collect();
    if scored.iter().any(|(_, score)| *score > MIN_SCORE) {
        scored.retain(|(_, score)| *score > MIN_SCORE);
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    scored.into_iter().map(|(index, _)| index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_documents_come_first_and_the_rest_stay_out() {
        let documents = [
            "weather in Paris stays mild",
            "my cat is called Miso",
            "we talked about the cat food brand",
            "nothing relevant here",
        ];
        let ranked = rank("what is my cat called?", &documents);
        assert_eq!(ranked[0], 1);
        assert!(ranked.contains(&2));
        assert!(!ranked.contains(&0) && !ranked.contains(&3), "{ranked:?}");
    }

    #[test]
    fn a_query_of_more_than_64_terms_still_matches_each_of_them() {
        let query: Vec<String> = (0..80).map(|n| format!("w{n:02}")).collect();
        let query = query.join(" ");
        let ranked = rank(&query, &["nothing", "only W79 here", "w00 and w79"]);
        assert_eq!(ranked, vec![2, 1]);
    }

    #[test]
    fn without_any_match_every_document_is_a_candidate_newest_first() {
        let ranked = rank("zebra", &["one thing", "another thing"]);
        assert_eq!(ranked, vec![1, 0]);
    }
}
