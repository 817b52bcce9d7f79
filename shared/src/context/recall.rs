//! Recall of older messages: Okapi BM25 over the messages outside the active window, the query
//! being the latest user message (`context.md` step 5).

use std::collections::HashMap;

const K1: f64 = 1.5;
const B: f64 = 0.75;
/// Messages scoring at or below this are left out, unless none scores above it.
const MIN_SCORE: f64 = 0.1;

/// Lowercase, punctuation removed, each CJK character one token, other words (letters and
/// digits) kept when longer than one character.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, tokens: &mut Vec<String>| {
        if word.chars().nth(1).is_some() {
            tokens.push(std::mem::take(word));
        } else {
            word.clear();
        }
    };
    for c in text.chars() {
        if ('\u{4E00}'..='\u{9FFF}').contains(&c) {
            flush(&mut word, &mut tokens);
            tokens.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else {
            flush(&mut word, &mut tokens);
        }
    }
    flush(&mut word, &mut tokens);
    tokens
}

/// The indices of `documents` worth recalling for `query`, best first: those scoring above
/// 0.1, or all of them when none does. Ties keep the newer document first.
pub fn rank(query: &str, documents: &[&str]) -> Vec<usize> {
    let query: Vec<String> = {
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        terms
    };
    let documents: Vec<Vec<String>> = documents.iter().map(|text| tokenize(text)).collect();
    let count = documents.len() as f64;
    if documents.is_empty() {
        return Vec::new();
    }
    let average_length = (documents.iter().map(Vec::len).sum::<usize>() as f64 / count).max(1.0);
    let mut containing: HashMap<&str, f64> = HashMap::new();
    for document in &documents {
        let mut seen: Vec<&str> = document.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for term in seen {
            if query.binary_search_by(|q| q.as_str().cmp(term)).is_ok() {
                *containing.entry(term).or_default() += 1.0;
            }
        }
    }
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(index, document)| {
            let length = document.len() as f64;
            let mut frequencies: HashMap<&str, f64> = HashMap::new();
            for term in document {
                if containing.contains_key(term.as_str()) {
                    *frequencies.entry(term.as_str()).or_default() += 1.0;
                }
            }
            let score = frequencies
                .iter()
                .map(|(term, frequency)| {
                    let n = containing[term];
                    let idf = ((count - n + 0.5) / (n + 0.5) + 1.0).ln();
                    idf * frequency * (K1 + 1.0)
                        / (frequency + K1 * (1.0 - B + B * length / average_length))
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
    fn tokens_are_lowercase_words_and_single_cjk_characters() {
        assert_eq!(
            tokenize("Hello, World! a 42 x 你好db"),
            vec!["hello", "world", "42", "你", "好", "db"]
        );
    }

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
    fn without_any_match_every_document_is_a_candidate_newest_first() {
        let ranked = rank("zebra", &["one thing", "another thing"]);
        assert_eq!(ranked, vec![1, 0]);
    }
}
