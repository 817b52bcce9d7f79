//! One conformance suite for every search backend: the same tests against the embedded index and
//! OpenSearch (osmem-server). Each test uses owners of its own, so tests share one OpenSearch
//! index safely.

use std::sync::Arc;

use crate::common::*;
use sage_core::config::SearchConfig;
use sage_core::search::{
    Collection, EmbeddedIndex, OpenSearchIndex, Removal, SearchDocument, SearchIndex, SearchQuery,
};
use serde_json::json;

fn owner(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

fn passage(id: &str, owner: &str, scope: &str, parent: &str, text: &str) -> SearchDocument {
    SearchDocument {
        id: format!("{owner}-{id}"),
        owner: owner.into(),
        collection: Collection::Knowledge,
        scope: scope.into(),
        parent: parent.into(),
        title: format!("{parent}.md"),
        text: text.into(),
        source: json!({"doc_id": parent, "path": format!("docs/{parent}.md")}),
        vector: None,
    }
}

/// User `u`'s passage "The harbour opens at dawn" (parent `port`), for the file-sharing tests.
fn harbour_passage() -> SearchDocument {
    passage("1", "u", "kb", "port", "The harbour opens at dawn")
}

fn query(owner: &str, scopes: &[&str], text: &str) -> SearchQuery {
    SearchQuery {
        owner: owner.into(),
        collection: Collection::Knowledge,
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        text: text.into(),
        all_words: false,
        vector: None,
        limit: 10,
    }
}

fn parents(hits: &[sage_core::search::SearchHit]) -> Vec<&str> {
    hits.iter().map(|hit| hit.parent.as_str()).collect()
}

async fn text_search_ranks_the_owners_passages_only(index: Arc<dyn SearchIndex>) {
    let alice = owner("alice");
    let bob = owner("bob");
    index
        .upsert(vec![
            passage(
                "1",
                &alice,
                "kb1",
                "rust",
                "Ownership rules in Rust: each value has one owner and ownership moves",
            ),
            passage("2", &alice, "kb1", "cats", "Cats sleep sixteen hours a day"),
            passage(
                "3",
                &alice,
                "kb2",
                "borrow",
                "Borrowing lends a value without giving up ownership",
            ),
            passage(
                "4",
                &bob,
                "kb9",
                "bob-rust",
                "Ownership ownership ownership",
            ),
        ])
        .await
        .unwrap();
    let hits = index
        .search(&query(&alice, &[], "ownership"))
        .await
        .unwrap();
    assert_eq!(
        parents(&hits),
        ["rust", "borrow"],
        "best first, nobody else's"
    );
    assert!(
        hits[0].score > hits[1].score && hits[0].score <= 1.0,
        "{hits:?}"
    );
    assert_eq!(
        hits[0].source["path"], "docs/rust.md",
        "the source comes back as given"
    );
    assert_eq!(hits[0].title, "rust.md");

    let scoped = index
        .search(&query(&alice, &["kb2"], "ownership"))
        .await
        .unwrap();
    assert_eq!(parents(&scoped), ["borrow"], "only the scopes asked for");
    assert!(
        index
            .search(&query(&alice, &[], "zebra"))
            .await
            .unwrap()
            .is_empty(),
        "nothing that does not match"
    );
    assert!(
        index
            .search(&query(&owner("carol"), &[], "ownership"))
            .await
            .unwrap()
            .is_empty(),
        "an owner with nothing finds nothing"
    );
}

async fn all_words_filters_to_documents_holding_each_word(index: Arc<dyn SearchIndex>) {
    let alice = owner("alice");
    index
        .upsert(vec![
            passage("1", &alice, "", "both", "apple pie on sunday"),
            passage("2", &alice, "", "one", "apple cider"),
        ])
        .await
        .unwrap();
    let mut any = query(&alice, &[], "apple pie");
    let mut hits = parents(&index.search(&any).await.unwrap()).join(",");
    assert_eq!(hits, "both,one", "any word ranks");
    any.all_words = true;
    hits = parents(&index.search(&any).await.unwrap()).join(",");
    assert_eq!(hits, "both", "every word filters");
}

async fn passages_are_replaced_by_id_and_removed_by_parent_or_scope(index: Arc<dyn SearchIndex>) {
    let alice = owner("alice");
    index
        .upsert(vec![
            passage(
                "1",
                &alice,
                "kb1",
                "guide",
                "The old guide talks about sailing",
            ),
            passage("2", &alice, "kb1", "guide", "Knots for sailing boats"),
            passage("3", &alice, "kb1", "notes", "Sailing notes"),
            passage("4", &alice, "kb2", "log", "Sailing log"),
        ])
        .await
        .unwrap();
    index
        .upsert(vec![passage(
            "1",
            &alice,
            "kb1",
            "guide",
            "The new guide talks about rowing",
        )])
        .await
        .unwrap();
    let rowing = index.search(&query(&alice, &[], "rowing")).await.unwrap();
    assert_eq!(rowing.len(), 1);
    assert!(rowing[0].text.contains("new guide"), "{rowing:?}");
    assert_eq!(
        index
            .search(&query(&alice, &[], "sailing"))
            .await
            .unwrap()
            .len(),
        3
    );

    let removed = index
        .remove(&Removal {
            owner: alice.clone(),
            collection: Collection::Knowledge,
            scope: "kb1".into(),
            parent: Some("guide".into()),
        })
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left = index.search(&query(&alice, &[], "sailing")).await.unwrap();
    let mut left = parents(&left);
    left.sort();
    assert_eq!(left, ["log", "notes"]);
    let removed = index
        .remove(&Removal {
            owner: alice.clone(),
            collection: Collection::Knowledge,
            scope: "kb2".into(),
            parent: None,
        })
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(
        parents(&index.search(&query(&alice, &[], "sailing")).await.unwrap()),
        ["notes"]
    );
}

async fn vectors_reorder_text_matches(index: Arc<dyn SearchIndex>) {
    let alice = owner("alice");
    let mut strong_text = passage("1", &alice, "kb", "strong", "apple apple apple pie");
    strong_text.vector = Some(vec![0.0, 1.0, 0.0]);
    let mut close_vector = passage(
        "2",
        &alice,
        "kb",
        "close",
        "apple tart recipe with more words",
    );
    close_vector.vector = Some(vec![1.0, 0.0, 0.0]);
    index.upsert(vec![strong_text, close_vector]).await.unwrap();

    let text_only = index.search(&query(&alice, &[], "apple")).await.unwrap();
    assert_eq!(parents(&text_only), ["strong", "close"]);
    let mut with_vector = query(&alice, &[], "apple");
    with_vector.vector = Some(vec![1.0, 0.0, 0.0]);
    let hybrid = index.search(&with_vector).await.unwrap();
    assert_eq!(parents(&hybrid), ["close", "strong"], "{hybrid:?}");
}

async fn ping_answers(index: Arc<dyn SearchIndex>) {
    index.ping().await.unwrap();
    assert!(!index.describe().is_empty());
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            conformance!(@test $make, text_search_ranks_the_owners_passages_only);
            conformance!(@test $make, passages_are_replaced_by_id_and_removed_by_parent_or_scope);
            conformance!(@test $make, vectors_reorder_text_matches);
            conformance!(@test $make, all_words_filters_to_documents_holding_each_word);
            conformance!(@test $make, ping_answers);
        }
    };
    (@test $make:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let (index, _guard) = $make.await;
            super::$name(index).await;
        }
    };
}

async fn embedded() -> (Arc<dyn SearchIndex>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let index = EmbeddedIndex::open(dir.path().join("search/index.jsonl"));
    (Arc::new(index), dir)
}

pub fn opensearch_config(url: &str) -> SearchConfig {
    SearchConfig {
        embedding_api_key: None,
        embedding_base_url: None,
        embedding_model: "text-embedding-3-large".into(),
        embedding_dims: None,
        es_url: Some(url.into()),
        knowledge_index_interval_seconds: 0,
        es_api_key: None,
        es_username: None,
        es_password: None,
        es_knn: false,
    }
}

async fn opensearch() -> (Arc<dyn SearchIndex>, ()) {
    let index = OpenSearchIndex::connect(&opensearch_config(&opensearch_url()))
        .await
        .unwrap();
    (Arc::new(index), ())
}

conformance!(embedded_index, embedded());
conformance!(opensearch_index, opensearch());

/// The embedded index is a file: a second handle (another process) sees what the first wrote,
/// and a restart keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_index_is_shared_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.jsonl");
    let writer = EmbeddedIndex::open(file.clone());
    let reader = EmbeddedIndex::open(file.clone());
    assert!(
        reader
            .search(&query("u", &[], "harbour"))
            .await
            .unwrap()
            .is_empty()
    );
    writer.upsert(vec![harbour_passage()]).await.unwrap();
    assert_eq!(
        parents(&reader.search(&query("u", &[], "harbour")).await.unwrap()),
        ["port"]
    );
    drop((writer, reader));
    let restarted = EmbeddedIndex::open(file);
    assert_eq!(
        restarted
            .search(&query("u", &[], "harbour"))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Each change appends to the journal; a second handle follows appends, removals and the
/// rewrite that compacts the journal, and the file stays in proportion to the live documents.
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_journal_is_compacted_and_followed_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.jsonl");
    let writer = EmbeddedIndex::open(file.clone());
    let reader = EmbeddedIndex::open(file.clone());
    let text = "the harbour opens at dawn ".repeat(4);
    for round in 0..600 {
        writer
            .upsert(vec![passage("1", "u", "kb", &format!("v{round}"), &text)])
            .await
            .unwrap();
        if round % 97 == 0 {
            let hits = reader.search(&query("u", &[], "harbour")).await.unwrap();
            assert_eq!(parents(&hits), [format!("v{round}").as_str()]);
        }
    }
    let one_entry = serde_json::to_vec(&passage("1", "u", "kb", "v599", &text))
        .unwrap()
        .len() as u64
        + 12;
    writer
        .upsert(vec![passage("2", "u", "kb", "tide", "high tide at noon")])
        .await
        .unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size < 300 * one_entry + 4096,
        "600 replacements of one passage left a {size}-byte journal"
    );
    let hits = reader
        .search(&query("u", &[], "harbour tide"))
        .await
        .unwrap();
    assert_eq!(parents(&hits).len(), 2, "{hits:?}");
    let removed = writer
        .remove(&Removal {
            owner: "u".into(),
            collection: Collection::Knowledge,
            scope: "kb".into(),
            parent: Some("tide".into()),
        })
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(
        parents(
            &reader
                .search(&query("u", &[], "tide harbour"))
                .await
                .unwrap()
        ),
        ["v599"]
    );
    let restarted = EmbeddedIndex::open(file);
    assert_eq!(
        parents(
            &restarted
                .search(&query("u", &[], "tide harbour"))
                .await
                .unwrap()
        ),
        ["v599"]
    );
}

/// A write cut off mid-line (a killed process) loses that entry only; the index keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_journal_entry_is_dropped_and_the_index_goes_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.jsonl");
    let index = EmbeddedIndex::open(file.clone());
    index.upsert(vec![harbour_passage()]).await.unwrap();
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    journal
        .write_all(br#"{"upsert":{"id":"u-2","owner":"u","#)
        .unwrap();
    drop(journal);
    let restarted = EmbeddedIndex::open(file.clone());
    restarted
        .upsert(vec![passage(
            "3",
            "u",
            "kb",
            "quay",
            "The harbour closes at dusk",
        )])
        .await
        .unwrap();
    let mut found = parents(&index.search(&query("u", &[], "harbour")).await.unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    found.sort();
    assert_eq!(found, ["port", "quay"]);
}

/// An index kept by an earlier version (one JSON array in `index.json`) is taken over.
#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_versions_index_file_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("index.json");
    let documents = vec![harbour_passage()];
    std::fs::write(&legacy, serde_json::to_vec(&documents).unwrap()).unwrap();
    let index = EmbeddedIndex::open(dir.path().join("index.jsonl"));
    assert_eq!(
        parents(&index.search(&query("u", &[], "harbour")).await.unwrap()),
        ["port"]
    );
    assert!(
        !legacy.exists(),
        "the earlier file is replaced by the journal"
    );
    let restarted = EmbeddedIndex::open(dir.path().join("index.jsonl"));
    assert_eq!(
        parents(&restarted.search(&query("u", &[], "harbour")).await.unwrap()),
        ["port"]
    );
}

/// A service that is not OpenSearch fails the readiness ping instead of passing on any status.
#[tokio::test(flavor = "multi_thread")]
async fn a_port_that_is_not_opensearch_fails_the_ping() {
    let llm = MockLlm::start(Default::default()).await;
    let index = OpenSearchIndex::connect(&opensearch_config(&llm.base_url))
        .await
        .unwrap();
    assert!(index.ping().await.is_err());
}
