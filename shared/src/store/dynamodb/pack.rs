//! How a batch of events becomes items. DynamoDB prices a write by item and kilobyte, so
//! consecutive events of one batch share an item: their bodies, one compact JSON line each
//! (compact JSON never holds a raw newline), deflated together. A message's deltas repeat all
//! but their text and time, so one item of at most `ITEM_BODY_BYTES` holds a dozen or more: the
//! write units of a run follow the bytes it streamed, not the number of chunks the model sent.
//!
//! An item is keyed by its first sequence number and holds `first..=last`.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

/// An item's stored body at most: with its keys and attribute names the item stays within one
/// 1 KB write unit.
pub const ITEM_BODY_BYTES: usize = 900;
/// Raw bodies gathered into one pack before it is deflated.
const RAW_PACK_BYTES: usize = 8 * 1024;
/// Events in one item at most; a reader looking for a sequence number starts this far back.
pub const MAX_PACK_EVENTS: u64 = 64;

#[derive(Debug, PartialEq)]
pub enum PackBody {
    /// One event's body as it is.
    Plain(String),
    /// Several events' bodies, joined by newlines, deflated.
    Deflated(Vec<u8>),
}

#[derive(Debug, PartialEq)]
pub struct Pack {
    pub first: u64,
    pub last: u64,
    pub body: PackBody,
}

/// Groups consecutive `(seq, body)` pairs into packs. A body over `ITEM_BODY_BYTES` stays
/// alone and plain, so it can still go to the object store by itself.
pub fn pack(bodies: impl IntoIterator<Item = (u64, String)>) -> Vec<Pack> {
    let mut groups: Vec<Vec<(u64, String)>> = Vec::new();
    let mut raw_bytes = 0;
    for (seq, body) in bodies {
        let joins = groups.last().is_some_and(|group| {
            let (last_seq, last_body) = group.last().expect("groups are never empty");
            last_seq + 1 == seq
                && last_body.len() <= ITEM_BODY_BYTES
                && body.len() <= ITEM_BODY_BYTES
                && (group.len() as u64) < MAX_PACK_EVENTS
                && raw_bytes + 1 + body.len() <= RAW_PACK_BYTES
        });
        if joins {
            raw_bytes += 1 + body.len();
            groups.last_mut().expect("checked above").push((seq, body));
        } else {
            raw_bytes = body.len();
            groups.push(vec![(seq, body)]);
        }
    }
    let mut packs = Vec::with_capacity(groups.len());
    for group in groups {
        deflate_into(group, &mut packs);
    }
    packs
}

/// One pack for the group, or, when it deflates to more than an item holds, its halves.
fn deflate_into(mut group: Vec<(u64, String)>, packs: &mut Vec<Pack>) {
    let (first, last) = (group[0].0, group[group.len() - 1].0);
    if group.len() == 1 {
        let (seq, body) = group.pop().expect("one body");
        packs.push(Pack {
            first: seq,
            last: seq,
            body: PackBody::Plain(body),
        });
        return;
    }
    let deflated = deflate(&group);
    if deflated.len() <= ITEM_BODY_BYTES {
        packs.push(Pack {
            first,
            last,
            body: PackBody::Deflated(deflated),
        });
        return;
    }
    let second = group.split_off(group.len() / 2);
    deflate_into(group, packs);
    deflate_into(second, packs);
}

fn deflate(group: &[(u64, String)]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(ITEM_BODY_BYTES), Compression::new(6));
    for (index, (_, body)) in group.iter().enumerate() {
        if index > 0 {
            encoder.write_all(b"\n").expect("writing to memory");
        }
        encoder
            .write_all(body.as_bytes())
            .expect("writing to memory");
    }
    encoder.finish().expect("writing to memory")
}

/// The `(seq, body)` pairs of a stored item; `None` when it is not a pack of `first..=last`.
pub fn unpack(first: u64, last: u64, body: PackBody) -> Option<Vec<(u64, String)>> {
    let count = last.checked_sub(first)?.checked_add(1)?;
    let text = match body {
        PackBody::Plain(text) => text,
        PackBody::Deflated(bytes) => {
            let mut text = String::new();
            // A pack never inflates past what `pack` gathered; more is not ours.
            let limit = (RAW_PACK_BYTES + 2 * ITEM_BODY_BYTES) as u64;
            DeflateDecoder::new(bytes.as_slice())
                .take(limit)
                .read_to_string(&mut text)
                .ok()?;
            text
        }
    };
    let lines: Vec<String> = if count == 1 {
        vec![text]
    } else {
        text.split('\n').map(str::to_owned).collect()
    };
    (lines.len() as u64 == count).then(|| (first..=last).zip(lines).collect())
}

/// The lowest first sequence number an item holding `seq` can have.
pub fn earliest_item_holding(seq: u64) -> u64 {
    seq.saturating_sub(MAX_PACK_EVENTS - 1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies shaped like a message's deltas: the same fields, a different text and time.
    fn deltas(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
        seqs.map(|seq| {
            let body = format!(
                r#"{{"role":"assistant","content":"tok{seq} ","message_id":"6f1c1d0c9a7e4b3f8d2a5e6b7c8d9e0f","type":"do_subtask_result","session_id":"7d4b4a36-5a55-4bd1-9f0e-2f8f4e1b6c3a","agent_name":"SimpleAgent","timestamp":1796448941.{seq:06},"metadata":{{}}}}"#
            );
            (seq, body)
        })
        .collect()
    }

    fn ranges(packs: &[Pack]) -> Vec<(u64, u64)> {
        packs.iter().map(|pack| (pack.first, pack.last)).collect()
    }

    fn stored_size(pack: &Pack) -> usize {
        match &pack.body {
            PackBody::Plain(text) => text.len(),
            PackBody::Deflated(bytes) => bytes.len(),
        }
    }

    #[test]
    fn deltas_share_items_far_beyond_their_raw_size_and_come_back_unchanged() {
        let input = deltas(1..=1000);
        let raw: usize = input.iter().map(|(_, body)| body.len()).sum();
        let packs = pack(input.clone());
        assert!(
            packs
                .iter()
                .all(|pack| stored_size(pack) <= ITEM_BODY_BYTES)
        );
        assert!(
            packs.len() < raw.div_ceil(1024) / 4,
            "{} items for {raw} bytes",
            packs.len()
        );
        let mut back = Vec::new();
        for pack in packs {
            back.extend(unpack(pack.first, pack.last, pack.body).unwrap());
        }
        assert_eq!(back, input);
    }

    #[test]
    fn a_large_body_stands_alone_and_plain() {
        let mut input = deltas(1..=2);
        input.push((3, "y".repeat(ITEM_BODY_BYTES + 1)));
        input.extend(deltas(4..=5));
        let packs = pack(input);
        assert_eq!(ranges(&packs), [(1, 2), (3, 3), (4, 5)]);
        assert!(
            matches!(packs[1].body, PackBody::Plain(ref text) if text.len() == ITEM_BODY_BYTES + 1)
        );
    }

    #[test]
    fn bodies_that_do_not_deflate_are_split_until_each_item_fits() {
        // Incompressible bodies: each pair would deflate to more than an item holds.
        let mut state: u64 = 7;
        let noise = (1..=6)
            .map(|seq| {
                let text: String = (0..600)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1);
                        char::from(b'!' + (state >> 58) as u8)
                    })
                    .collect();
                (seq, text)
            })
            .collect::<Vec<_>>();
        let packs = pack(noise.clone());
        assert!(
            packs
                .iter()
                .all(|pack| stored_size(pack) <= ITEM_BODY_BYTES)
        );
        assert_eq!(packs.len(), 6);
        let back: Vec<_> = packs
            .into_iter()
            .flat_map(|pack| unpack(pack.first, pack.last, pack.body).unwrap())
            .collect();
        assert_eq!(back, noise);
    }

    #[test]
    fn a_pack_never_holds_more_events_than_a_reader_looks_back() {
        let packs = pack((1..=200).map(|seq| (seq, "a".to_owned())));
        assert!(
            packs
                .iter()
                .all(|pack| pack.last - pack.first < MAX_PACK_EVENTS)
        );
        assert_eq!(packs[0].last, MAX_PACK_EVENTS);
        assert!(earliest_item_holding(MAX_PACK_EVENTS) <= packs[0].first);
    }

    #[test]
    fn a_gap_in_the_sequence_starts_a_new_item() {
        let packs = pack([(1, "a".into()), (2, "b".into()), (5, "c".into())]);
        assert_eq!(ranges(&packs), [(1, 2), (5, 5)]);
    }

    #[test]
    fn an_item_that_does_not_match_its_range_is_refused() {
        let packs = pack(deltas(7..=9));
        let PackBody::Deflated(bytes) = &packs[0].body else {
            panic!("three deltas deflate together")
        };
        assert!(unpack(7, 10, PackBody::Deflated(bytes.clone())).is_none());
        assert!(unpack(7, 8, PackBody::Deflated(bytes.clone())).is_none());
        assert!(unpack(9, 7, PackBody::Plain("a".into())).is_none());
        assert!(unpack(1, 2, PackBody::Deflated(b"not deflate".to_vec())).is_none());
    }
}
