//! Reading streamed events without building JSON trees: each event is deserialized into a few
//! borrowed fields (its `type`, whether its text content is non-empty), everything else skipped.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What one event means to the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A text token: a `do_subtask_result` event (or a model chunk) with non-empty content.
    Text,
    /// Any other event.
    Other,
    /// The stream's final marker: `stream_end` (not counted apart from being an event), or the
    /// model's `[DONE]` (not an event).
    End,
    /// Not JSON, or not the expected shape.
    Malformed,
}

/// Which wire the stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Sage's event objects (`/api/stream`).
    Sage,
    /// OpenAI-compatible chat-completion chunks (`/v1/chat/completions`).
    OpenAi,
}

impl Wire {
    pub fn classify(self, data: &[u8]) -> Classified {
        match self {
            Wire::Sage => classify_sage(data),
            Wire::OpenAi => classify_openai(data),
        }
    }

    /// What marks a complete stream, for the error report.
    pub fn end_marker(self) -> &'static str {
        match self {
            Wire::Sage => "stream_end",
            Wire::OpenAi => "[DONE]",
        }
    }
}

/// True when a value is a non-empty string; any other value (object, null, number) is skipped.
#[derive(Debug, Default, Clone, Copy)]
struct NonEmptyText(bool);

impl<'de> Deserialize<'de> for NonEmptyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NonEmptyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NonEmptyText(!v.is_empty()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NonEmptyText(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NonEmptyText(false))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct SageEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    content: NonEmptyText,
}

fn classify_sage(data: &[u8]) -> Classified {
    match serde_json::from_slice::<SageEvent>(data) {
        Ok(event) => match event.kind.as_ref() {
            "stream_end" => Classified::End,
            "do_subtask_result" if event.content.0 => Classified::Text,
            _ => Classified::Other,
        },
        Err(_) => Classified::Malformed,
    }
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: NonEmptyText,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

/// Whether the first choice's delta carries text; the other choices are skipped.
#[derive(Default)]
struct FirstChoiceText(bool);

impl<'de> Deserialize<'de> for FirstChoiceText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstChoiceText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FirstChoiceText(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<Choice>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstChoiceText(
                    first.and_then(|c| c.delta).is_some_and(|d| d.content.0),
                ))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: FirstChoiceText,
}

fn classify_openai(data: &[u8]) -> Classified {
    if data.trim_ascii() == b"[DONE]" {
        return Classified::End;
    }
    match serde_json::from_slice::<ChatChunk>(data) {
        Ok(chunk) if chunk.choices.0 => Classified::Text,
        Ok(_) => Classified::Other,
        Err(_) => Classified::Malformed,
    }
}

/// Splits a byte stream into lines (NDJSON), copying only a line cut by a chunk boundary.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Calls `line` for every complete non-blank line in `chunk` (without its `\n` / `\r\n`).
    pub fn feed(&mut self, mut chunk: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                emit(&chunk[..end], &mut line);
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                emit(&self.partial, &mut line);
                self.partial.clear();
            }
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
    }

    /// The last line, when the stream did not end with a newline.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial, &mut line);
            self.partial.clear();
        }
    }
}

fn emit(raw: &[u8], line: &mut impl FnMut(&[u8])) {
    let trimmed = raw.strip_suffix(b"\r").unwrap_or(raw);
    if !trimmed.trim_ascii().is_empty() {
        line(trimmed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = concat!(
        r#"{"role":"assistant","content":"This ","message_id":"m","type":"do_subtask_result","timestamp":1.0,"metadata":{},"session_id":"s"}"#,
        "\n",
        r#"{"role":"assistant","content":"","message_id":"m","type":"do_subtask_result","timestamp":1.0,"metadata":{},"session_id":"s"}"#,
        "\n",
        r#"{"role":"tool","content":{"sum":3},"tool_call_id":"c","type":"tool_call_result","timestamp":1.0,"metadata":{},"session_id":"s"}"#,
        "\r\n",
        r#"{"role":"assistant","content":"\u4f60\"好","message_id":"m","type":"do_subtask_result","timestamp":1.0,"metadata":{"a":[1,{"b":null}]},"session_id":"s"}"#,
        "\n\n",
        r#"{"role":"assistant","type":"token_usage","content":"","message_id":"u","session_id":"s","metadata":{"token_usage":{"total_info":{},"per_step_info":[]}}}"#,
        "\n",
        r#"{"type":"stream_end","session_id":"s","timestamp":2.0,"total_stream_count":5}"#,
        "\n",
    );

    fn classify_all(wire: Wire, lines: &[Vec<u8>]) -> Vec<Classified> {
        lines.iter().map(|line| wire.classify(line)).collect()
    }

    #[test]
    fn ndjson_lines_survive_any_chunking() {
        let bytes = SAMPLE.as_bytes();
        for size in [1, 2, 7, 64, bytes.len()] {
            let mut splitter = LineSplitter::default();
            let mut lines = Vec::new();
            for chunk in bytes.chunks(size) {
                splitter.feed(chunk, |line| lines.push(line.to_vec()));
            }
            splitter.finish(|line| lines.push(line.to_vec()));
            use Classified::*;
            assert_eq!(
                classify_all(Wire::Sage, &lines),
                vec![Text, Other, Other, Text, Other, End],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn a_last_line_without_newline_is_kept() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        splitter.feed(b"{\"type\":\"normal\"}\n{\"type\":\"stream_", |l| {
            lines.push(l.to_vec())
        });
        splitter.feed(b"end\"}", |l| lines.push(l.to_vec()));
        splitter.finish(|l| lines.push(l.to_vec()));
        assert_eq!(
            classify_all(Wire::Sage, &lines),
            vec![Classified::Other, Classified::End]
        );
    }

    #[test]
    fn malformed_events_are_told_apart() {
        assert_eq!(Wire::Sage.classify(b"not json"), Classified::Malformed);
        assert_eq!(
            Wire::Sage.classify(b"{\"role\":\"assistant\"}"),
            Classified::Malformed
        );
        assert_eq!(
            Wire::OpenAi.classify(b"{\"choices\":"),
            Classified::Malformed
        );
    }

    #[test]
    fn openai_chunks_count_text_deltas_and_done() {
        use Classified::*;
        let chunks: [&[u8]; 7] = [
            br#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            br#"{"id":"x","choices":[{"index":0,"delta":{"content":"tok0 "},"finish_reason":null}]}"#,
            br#"{"id":"x","choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}]}"#,
            br#"{"id":"x","choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0}]}}]}"#,
            br#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            b"[DONE]",
        ];
        let got: Vec<_> = chunks.iter().map(|c| Wire::OpenAi.classify(c)).collect();
        assert_eq!(got, vec![Other, Text, Other, Other, Other, Other, End]);
    }

    #[tokio::test]
    async fn sse_frames_are_parsed_across_chunk_boundaries() {
        use futures_util::StreamExt;
        let text = concat!(
            ": ping\n\n",
            "id: 1\nevent: do_subtask_result\ndata: {\"type\":\"do_subtask_result\",\"content\":\"hi \",\"session_id\":\"s\"}\n\n",
            "id: 2\nevent: token_usage\ndata: {\"type\":\"token_usage\",\"content\":\"\",\"session_id\":\"s\"}\n\n",
            "id: 3\nevent: stream_end\ndata: {\"type\":\"stream_end\",\"session_id\":\"s\",\"total_stream_count\":2}\n\n",
        );
        for size in [1, 5, 33, text.len()] {
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = text
                .as_bytes()
                .chunks(size)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            let mut sse =
                sse_stream::SseStream::from_bytes_stream(futures_util::stream::iter(chunks));
            let mut got = Vec::new();
            while let Some(frame) = sse.next().await {
                if let Some(data) = frame.unwrap().data {
                    got.push(Wire::Sage.classify(data.as_bytes()));
                }
            }
            assert_eq!(
                got,
                vec![Classified::Text, Classified::Other, Classified::End],
                "chunk size {size}"
            );
        }
    }
}
