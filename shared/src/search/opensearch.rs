//! OpenSearch / Elasticsearch through the `opensearch` crate: one index, `sage-search`, created on
//! first use. The service ranks by text (BM25); with a query vector, up to five times `limit`
//! text candidates are re-ranked with the vectors kept in each document, the same scoring as the
//! embedded index, so no kNN plugin is needed. Authentication: `--es_username`/`--es_password`,
//! `--es_api_key`, or SigV4 for Amazon OpenSearch Service (`*.amazonaws.com`, credentials from
//! the function's role).

use async_trait::async_trait;
use opensearch::auth::Credentials;
use opensearch::http::request::JsonBody;
use opensearch::http::response::Response;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::IndicesCreateParts;
use opensearch::params::Refresh;
use opensearch::{BulkParts, DeleteByQueryParts, OpenSearch, SearchParts};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{Removal, SearchDocument, SearchError, SearchHit, SearchIndex, SearchQuery, rank_hits};
use crate::config::SearchConfig;

const INDEX: &str = "sage-search";
const MAX_CANDIDATES: usize = 200;

pub struct OpenSearchIndex {
    client: OpenSearch,
    url: String,
    /// With the k-NN plugin (`--es_knn`): the vector field's dimensions.
    knn_dimensions: Option<u16>,
    created: OnceCell<()>,
}

fn remote(error: impl std::error::Error + Send + Sync + 'static) -> SearchError {
    SearchError::Remote(Box::new(error))
}

/// The answer's JSON when its status is a success, else the service's reason.
async fn answer(response: Response) -> Result<Value, SearchError> {
    let status = response.status_code().as_u16();
    let body: Value = response.json().await.map_err(remote)?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let reason = body
        .pointer("/error/reason")
        .or_else(|| body.pointer("/error/type"))
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
        .chars()
        .take(300)
        .collect();
    Err(SearchError::Rejected { status, reason })
}

fn filters(owner: &str, collection: &str, scope: Option<&str>, parent: Option<&str>) -> Vec<Value> {
    let mut filters = vec![
        json!({"term": {"owner": owner}}),
        json!({"term": {"collection": collection}}),
    ];
    if let Some(scope) = scope {
        filters.push(json!({"term": {"scope": scope}}));
    }
    if let Some(parent) = parent {
        filters.push(json!({"term": {"parent": parent}}));
    }
    filters
}

impl OpenSearchIndex {
    pub async fn connect(config: &SearchConfig) -> Result<Self, SearchError> {
        crate::util::tls::install_crypto_provider();
        let url = config
            .es_url
            .clone()
            .ok_or_else(|| SearchError::Config("--es_url is not set".into()))?;
        let parsed = url::Url::parse(&url)
            .map_err(|error| SearchError::Config(format!("--es_url: {error}")))?;
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(parsed.clone()))
            .timeout(std::time::Duration::from_secs(30));
        if let Some(username) = &config.es_username {
            let password = config
                .es_password
                .as_ref()
                .map(|password| password.expose_secret().to_owned())
                .unwrap_or_default();
            transport = transport.auth(Credentials::Basic(username.clone(), password));
        } else if let Some(key) = &config.es_api_key {
            let key = key.expose_secret();
            transport = match key.split_once(':') {
                Some((id, secret)) => {
                    transport.auth(Credentials::ApiKey(id.to_owned(), secret.to_owned()))
                }
                None => transport.header(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_str(&format!("ApiKey {key}")).map_err(|_| {
                        SearchError::Config("--es_api_key is not a valid header value".into())
                    })?,
                ),
            };
        } else if let Some(service) = aws_service(parsed.host_str().unwrap_or_default()) {
            let aws = crate::util::tls::aws_config_loader().load().await;
            let credentials = aws.credentials_provider().ok_or_else(|| {
                SearchError::Config("no AWS credentials to sign OpenSearch requests".into())
            })?;
            let region = aws.region().cloned().ok_or_else(|| {
                SearchError::Config("no AWS region to sign OpenSearch requests".into())
            })?;
            transport = transport
                .auth(Credentials::AwsSigV4(credentials, region))
                .service_name(service);
        }
        let transport = transport
            .build()
            .map_err(|error| SearchError::Config(format!("--es_url: {error}")))?;
        Ok(Self {
            client: OpenSearch::new(transport),
            url: format!(
                "{}://{}{}",
                parsed.scheme(),
                parsed.host_str().unwrap_or_default(),
                parsed
                    .port()
                    .map(|port| format!(":{port}"))
                    .unwrap_or_default()
            ),
            knn_dimensions: knn_dimensions(config)?,
            created: OnceCell::new(),
        })
    }

    /// Creates the index with its mapping unless it exists.
    async fn ensure_index(&self) -> Result<(), SearchError> {
        self.created
            .get_or_try_init(|| async {
                let response = self
                    .client
                    .indices()
                    .create(IndicesCreateParts::Index(INDEX))
                    .body(index_body(self.knn_dimensions))
                    .send()
                    .await
                    .map_err(remote)?;
                match answer(response).await {
                    Ok(_) => Ok(()),
                    Err(SearchError::Rejected { reason, .. })
                        if reason.contains("already exists") =>
                    {
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            })
            .await
            .map(|_| ())
    }
}

/// `--es_knn` needs the vectors' length for the `knn_vector` mapping.
fn knn_dimensions(config: &SearchConfig) -> Result<Option<u16>, SearchError> {
    match (config.es_knn, config.embedding_dims) {
        (false, _) => Ok(None),
        (true, Some(dimensions)) if config.embedding_base_url.is_some() => Ok(Some(dimensions)),
        (true, _) => Err(SearchError::Config(
            "--es_knn needs --embedding_base_url and --embedding_dims (the vectors' length)".into(),
        )),
    }
}

/// The index's settings and mapping. With k-NN, vectors are a `knn_vector` field (OpenSearch's
/// k-NN plugin, `index.knn`); without, they are kept unindexed in each document for re-ranking.
fn index_body(knn_dimensions: Option<u16>) -> Value {
    let vector = match knn_dimensions {
        Some(dimension) => json!({"type": "knn_vector", "dimension": dimension}),
        None => json!({"type": "float", "index": false, "doc_values": false}),
    };
    let mut body = json!({"mappings": {"properties": {
        "owner": {"type": "keyword"},
        "collection": {"type": "keyword"},
        "scope": {"type": "keyword"},
        "parent": {"type": "keyword"},
        "title": {"type": "text"},
        "text": {"type": "text"},
        "source": {"type": "object", "enabled": false},
        "vector": vector,
    }}});
    if knn_dimensions.is_some() {
        body["settings"] = json!({"index": {"knn": true}});
    }
    body
}

/// The search request: the owner's documents of the collection (and scopes) as filters; the
/// text as a `multi_match`; with a vector and k-NN, a `knn` clause beside the text, either one
/// enough to match. The candidates are then ranked the same way on every backend.
fn search_body(query: &SearchQuery, knn: bool) -> Value {
    let mut filter = filters(&query.owner, query.collection.as_str(), None, None);
    if !query.scopes.is_empty() {
        filter.push(json!({"terms": {"scope": query.scopes}}));
    }
    let size = if query.vector.is_some() {
        (query.limit * 5).min(MAX_CANDIDATES)
    } else {
        query.limit.min(MAX_CANDIDATES)
    };
    let text = (!query.text.trim().is_empty()).then(|| {
        json!({"multi_match": {
            "query": query.text,
            "fields": ["title^2", "text"],
            "operator": if query.all_words { "and" } else { "or" },
        }})
    });
    let mut boolean = json!({"filter": filter});
    match (&query.vector, knn) {
        (Some(vector), true) if !query.all_words => {
            let mut should = vec![json!({"knn": {"vector": {"vector": vector, "k": size}}})];
            should.extend(text);
            boolean["should"] = Value::Array(should);
            boolean["minimum_should_match"] = json!(1);
        }
        _ => {
            if let Some(text) = text {
                boolean["must"] = json!([text]);
            }
        }
    }
    json!({"size": size, "query": {"bool": boolean}})
}

/// The SigV4 service of an Amazon OpenSearch endpoint.
fn aws_service(host: &str) -> Option<&'static str> {
    if host.ends_with(".aoss.amazonaws.com") {
        Some("aoss")
    } else if host.ends_with(".amazonaws.com") {
        Some("es")
    } else {
        None
    }
}

#[async_trait]
impl SearchIndex for OpenSearchIndex {
    #[tracing::instrument(name = "search.upsert", skip_all)]
    async fn upsert(&self, documents: Vec<SearchDocument>) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        self.ensure_index().await?;
        let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(documents.len() * 2);
        for document in documents {
            body.push(json!({"index": {"_id": document.id}}).into());
            body.push(serde_json::to_value(&document)?.into());
        }
        let response = self
            .client
            .bulk(BulkParts::Index(INDEX))
            .refresh(Refresh::True)
            .body(body)
            .send()
            .await
            .map_err(remote)?;
        let answer = answer(response).await?;
        if answer["errors"].as_bool() == Some(true) {
            let reason = answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|item| item.pointer("/index/error/reason").and_then(Value::as_str))
                .unwrap_or("a document was refused")
                .chars()
                .take(300)
                .collect();
            return Err(SearchError::Rejected {
                status: 400,
                reason,
            });
        }
        Ok(())
    }

    #[tracing::instrument(name = "search.remove", skip_all)]
    async fn remove(&self, removal: &Removal) -> Result<u64, SearchError> {
        self.ensure_index().await?;
        let filter = filters(
            &removal.owner,
            removal.collection.as_str(),
            Some(&removal.scope),
            removal.parent.as_deref(),
        );
        let response = self
            .client
            .delete_by_query(DeleteByQueryParts::Index(&[INDEX]))
            .refresh(true)
            .body(json!({"query": {"bool": {"filter": filter}}}))
            .send()
            .await
            .map_err(remote)?;
        Ok(answer(response).await?["deleted"].as_u64().unwrap_or(0))
    }

    #[tracing::instrument(name = "search.query", skip_all)]
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        self.ensure_index().await?;
        let response = self
            .client
            .search(SearchParts::Index(&[INDEX]))
            .body(search_body(query, self.knn_dimensions.is_some()))
            .send()
            .await
            .map_err(remote)?;
        let answer = answer(response).await?;
        let candidates: Vec<(SearchDocument, f64)> = answer
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|hit| {
                let document: SearchDocument =
                    serde_json::from_value(hit.get("_source")?.clone()).ok()?;
                let score = hit.get("_score").and_then(Value::as_f64).unwrap_or(0.0);
                Some((document, score))
            })
            .collect();
        let borrowed: Vec<(&SearchDocument, f64)> = candidates
            .iter()
            .map(|(document, score)| (document, *score))
            .collect();
        Ok(rank_hits(&borrowed, query.vector.as_deref(), query.limit))
    }

    async fn ping(&self) -> Result<(), SearchError> {
        let response = self.client.info().send().await.map_err(remote)?;
        let info = answer(response).await?;
        if info.pointer("/version/number").is_some() {
            Ok(())
        } else {
            Err(SearchError::Rejected {
                status: 200,
                reason: "not an OpenSearch or Elasticsearch answer".into(),
            })
        }
    }

    fn describe(&self) -> String {
        format!("OpenSearch at {}", self.url)
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Collection;

    fn query(vector: Option<Vec<f32>>) -> SearchQuery {
        SearchQuery {
            owner: "ada".into(),
            collection: Collection::Knowledge,
            scopes: vec!["kb1".into()],
            text: "ownership rules".into(),
            all_words: false,
            vector,
            limit: 4,
        }
    }

    /// OpenSearch's documented k-NN forms: an index with `index.knn` and a `knn_vector` field
    /// of the embeddings' dimension, and a `knn` query clause naming the field, the vector and k.
    #[test]
    fn with_knn_vectors_are_indexed_and_queried_in_opensearchs_form() {
        let index = index_body(Some(3));
        assert_eq!(index["settings"]["index"]["knn"], true);
        assert_eq!(
            index["mappings"]["properties"]["vector"],
            json!({"type": "knn_vector", "dimension": 3})
        );
        let body = search_body(&query(Some(vec![0.1, 0.2, 0.3])), true);
        let boolean = &body["query"]["bool"];
        let should = boolean["should"].as_array().unwrap();
        let clause = &should[0]["knn"]["vector"];
        assert_eq!(clause["k"], 20);
        let sent: Vec<f64> = clause["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!((sent[2] - 0.3).abs() < 1e-6, "{sent:?}");
        assert_eq!(should[1]["multi_match"]["query"], "ownership rules");
        assert_eq!(boolean["minimum_should_match"], 1);
        assert_eq!(boolean["filter"][2], json!({"terms": {"scope": ["kb1"]}}));
        assert_eq!(body["size"], 20);
    }

    #[test]
    fn knn_needs_the_embeddings_length() {
        let search = |args: &[&str]| {
            let mut all = vec!["sage", "--es_url", "http://search:9200"];
            all.extend_from_slice(args);
            crate::config::Config::try_from_args(all).unwrap().search
        };
        assert_eq!(knn_dimensions(&search(&[])).unwrap(), None);
        let missing = knn_dimensions(&search(&["--es_knn", "true"])).unwrap_err();
        assert!(
            missing.to_string().contains("--embedding_dims"),
            "{missing}"
        );
        let set = search(&[
            "--es_knn",
            "--embedding_base_url",
            "http://embed/v1",
            "--embedding_dims",
            "256",
        ]);
        assert_eq!(knn_dimensions(&set).unwrap(), Some(256));
    }

    #[test]
    fn without_knn_the_text_must_match_and_vectors_only_rerank() {
        let index = index_body(None);
        assert!(index.get("settings").is_none());
        assert_eq!(index["mappings"]["properties"]["vector"]["index"], false);
        let body = search_body(&query(Some(vec![0.1, 0.2, 0.3])), false);
        assert!(body["query"]["bool"].get("should").is_none());
        assert_eq!(
            body["query"]["bool"]["must"][0]["multi_match"]["operator"],
            "or"
        );
        assert_eq!(search_body(&query(None), false)["size"], 4);
    }

    #[test]
    fn amazon_endpoints_are_signed_for_their_service() {
        assert_eq!(
            aws_service("search-sage-abc.eu-west-1.es.amazonaws.com"),
            Some("es")
        );
        assert_eq!(
            aws_service("xyz.us-east-1.aoss.amazonaws.com"),
            Some("aoss")
        );
        assert_eq!(aws_service("localhost"), None);
    }
}
