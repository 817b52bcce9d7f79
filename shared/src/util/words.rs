//! The words of a text as search sees them, and the Okapi BM25 weight of a term: shared by the
//! prompt's recall and the embedded search index.

const K1: f64 = 1.5;
const B: f64 = 0.75;

/// Lowercase, punctuation removed, each CJK character one token, other words (letters and
/// digits) kept when longer than one character.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    each_token(text, &mut String::new(), |token| {
        tokens.push(String::from_utf8_lossy(token).into_owned())
    });
    tokens
}

/// Calls `found` with the UTF-8 bytes of each token of `text` (as [`tokenize`] splits it),
/// lowercased in `buffer`: no allocation per token.
pub(crate) fn each_token(text: &str, buffer: &mut String, mut found: impl FnMut(&[u8])) {
    if text.is_ascii() {
        for word in text
            .as_bytes()
            .split(|byte| !byte.is_ascii_alphanumeric())
            .filter(|word| word.len() > 1)
        {
            if word.iter().any(u8::is_ascii_uppercase) {
                buffer.clear();
                buffer.extend(
                    word.iter()
                        .map(|byte| char::from(byte.to_ascii_lowercase())),
                );
                found(buffer.as_bytes());
            } else {
                found(word);
            }
        }
        return;
    }
    buffer.clear();
    let mut letters = 0;
    let flush = |buffer: &mut String, letters: &mut usize, found: &mut dyn FnMut(&[u8])| {
        if *letters > 1 {
            found(buffer.as_bytes());
        }
        buffer.clear();
        *letters = 0;
    };
    for c in text.chars() {
        if ('\u{4E00}'..='\u{9FFF}').contains(&c) {
            flush(buffer, &mut letters, &mut found);
            let mut bytes = [0u8; 4];
            found(c.encode_utf8(&mut bytes).as_bytes());
        } else if c.is_alphanumeric() {
            if c.is_ascii() {
                buffer.push(c.to_ascii_lowercase());
            } else {
                buffer.extend(c.to_lowercase());
            }
            letters += 1;
        } else {
            flush(buffer, &mut letters, &mut found);
        }
    }
    flush(buffer, &mut letters, &mut found);
}

/// The BM25 weight of a term found `frequency` times in a document, when `containing` of the
/// `count` documents hold it and the document is `relative_length` times the average length.
pub fn bm25_weight(frequency: u32, containing: f64, count: f64, relative_length: f64) -> f64 {
    let frequency = f64::from(frequency);
    let idf = ((count - containing + 0.5) / (containing + 0.5) + 1.0).ln();
    idf * frequency * (K1 + 1.0) / (frequency + K1 * (1.0 - B + B * relative_length))
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
}
