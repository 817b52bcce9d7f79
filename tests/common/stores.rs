//! The store servers: MariaDB / MySQL and DynamoDB (moto).

/// MariaDB / MySQL for the tests: `SAGE_TEST_MYSQL_{HOST,PORT,USER,PASSWORD}`, by default the
/// machine's server at 127.0.0.1:3306 as root (`tests/run.sh` starts one when it is missing).
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

pub fn mysql_settings() -> MysqlSettings {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    MysqlSettings {
        host: var("SAGE_TEST_MYSQL_HOST", "127.0.0.1"),
        port: var("SAGE_TEST_MYSQL_PORT", "3306")
            .parse()
            .expect("a port number"),
        user: var("SAGE_TEST_MYSQL_USER", "root"),
        password: var("SAGE_TEST_MYSQL_PASSWORD", ""),
    }
}

/// A fresh database name, so that every test starts empty.
pub fn fresh_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub async fn mysql_store(database: &str) -> sage_core::store::SqlStore {
    let settings = mysql_settings();
    sage_core::store::SqlStore::connect_mysql(
        &settings.host,
        settings.port,
        &settings.user,
        &settings.password,
        database,
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "MariaDB/MySQL at {}:{} is not reachable ({error}); run `bash tests/run.sh`, which starts it",
            settings.host, settings.port
        )
    })
}

/// The moto server `tests/run.sh` starts (`SAGE_TEST_DYNAMODB_ENDPOINT`).
pub fn dynamodb_endpoint() -> String {
    std::env::var("SAGE_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!("SAGE_TEST_DYNAMODB_ENDPOINT is not set; run `bash tests/run.sh`, which starts moto")
    })
}

/// The OpenSearch stand-in `tests/run.sh` starts (osmem-server, `SAGE_TEST_OPENSEARCH_URL`).
pub fn opensearch_url() -> String {
    std::env::var("SAGE_TEST_OPENSEARCH_URL").unwrap_or_else(|_| {
        panic!(
            "SAGE_TEST_OPENSEARCH_URL is not set; run `bash tests/run.sh`, which starts osmem-server"
        )
    })
}

/// The flags of a `sage-local` on DynamoDB table `table` at `endpoint`.
pub fn dynamodb_flags<'a>(endpoint: &'a str, table: &'a str) -> [&'a str; 6] {
    [
        "--db_type",
        "dynamodb",
        "--dynamodb_endpoint",
        endpoint,
        "--dynamodb_table",
        table,
    ]
}

/// Environment for a child process that talks to moto.
pub const MOTO_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// A DynamoDB client of moto.
pub fn dynamo_client() -> aws_sdk_dynamodb::Client {
    let credentials =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(dynamodb_endpoint())
        .credentials_provider(credentials)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

pub async fn dynamo_store(table: &str) -> sage_core::store::DynamoStore {
    let store = sage_core::store::DynamoStore::with_client(dynamo_client(), table);
    store.create_table().await.unwrap_or_else(|error| {
        panic!("moto at {} refused the table: {error}", dynamodb_endpoint())
    });
    store
}

/// The object store on moto's S3 (`SAGE_TEST_DYNAMODB_ENDPOINT` serves S3 too), in `bucket`
/// (created when missing), as the server reaches it with `--minio_*`.
pub async fn s3_objects(bucket: &str, public_base_url: Option<&str>) -> sage_core::blob::S3Objects {
    let endpoint = dynamodb_endpoint();
    let config = sage_core::Config::try_from_args([
        "sage",
        "--minio_endpoint",
        &endpoint,
        "--minio_bucket_name",
        bucket,
        "--minio_access_key",
        "testing",
        "--minio_secret_key",
        "testing",
    ])
    .unwrap();
    let mut blob = config.blob.clone();
    blob.s3_public_base_url = public_base_url.map(str::to_owned);
    sage_core::blob::S3Objects::connect(&blob)
        .await
        .unwrap_or_else(|error| panic!("moto's S3 at {endpoint}: {error}"))
}
