//! Corpus URLs and paths: which object store, which prefix, with which credentials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

use crate::error::{Error, ErrorKind, Result};

/// The kind of store a [`Location`] points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// A local directory (a plain path or `file://`).
    Local,
    /// Amazon S3 or an S3-compatible server (`s3://`, `s3a://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`, `abfs://`, `abfss://`, `azure://`).
    Azure,
    /// A plain HTTP(S) server, read only (`http://`, `https://`).
    Http,
}

/// How a [`Location`] builds its store: configuration besides the URL.
///
/// Credentials and endpoints come from the usual environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
/// `AWS_ALLOW_HTTP`, `AWS_SKIP_SIGNATURE`, `GOOGLE_SERVICE_ACCOUNT`,
/// `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
/// ...) when `from_env` is set, then from `options`, which win. Option keys are the ones of
/// the `object_store` builders, for example `aws_endpoint`, `aws_access_key_id`,
/// `aws_allow_http`, `google_service_account`, `azure_storage_account_name`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Read the store's configuration from the environment first.
    pub from_env: bool,
    /// Configuration keys and values, applied after the environment.
    pub options: Vec<(String, String)>,
    /// Time allowed for one request, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// Time allowed for connecting.
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            from_env: true,
            options: Vec::new(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl StoreOptions {
    /// No environment: only the given options (for tests and for callers that hold their
    /// own configuration).
    pub fn isolated() -> Self {
        StoreOptions {
            from_env: false,
            ..StoreOptions::default()
        }
    }

    /// Adds one configuration key (see the type's documentation).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }
}

/// A corpus location: an object store and the prefix of the corpus inside it.
///
/// ```no_run
/// use cellarrow::store::Location;
/// let loc = Location::parse("s3://bucket/corpora/pbmc")?;
/// assert_eq!(loc.url_of("manifest.json"), "s3://bucket/corpora/pbmc/manifest.json");
/// let local = Location::parse("/data/pbmc.corpus")?;
/// assert!(local.local_root().is_some());
/// # Ok::<(), cellarrow::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Location {
    url: String,
    scheme: Scheme,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// `scheme://authority` of the store, for registering it with a query engine.
    base: String,
    local_root: Option<PathBuf>,
}

/// Whether `s` is a URL with a scheme (`s3://...`), as opposed to a local path.
///
/// ```
/// assert!(cellarrow::store::is_url("s3://bucket/x"));
/// assert!(!cellarrow::store::is_url("/data/x"));
/// assert!(!cellarrow::store::is_url("relative/dir"));
/// ```
pub fn is_url(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        }
        None => false,
    }
}

impl Location {
    /// Parses a corpus URL or path with [`StoreOptions::default`] (configuration from the
    /// environment).
    pub fn parse(url_or_path: &str) -> Result<Location> {
        Self::parse_with(url_or_path, &StoreOptions::default())
    }

    /// Parses a corpus URL or path: `s3://bucket/prefix` (also `s3a://`), `gs://bucket/prefix`,
    /// `az://container/prefix` (also `abfs(s)://`, `azure://`), `http(s)://host/prefix`,
    /// `file:///abs/path` or a plain path. Errors ([`ErrorKind::InvalidUrl`],
    /// [`ErrorKind::Credentials`]) name the URL.
    pub fn parse_with(url_or_path: &str, options: &StoreOptions) -> Result<Location> {
        if !is_url(url_or_path) {
            return Self::local(Path::new(url_or_path));
        }
        let (scheme_text, rest) = url_or_path.split_once("://").expect("is_url checked");
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad_url(
                        url_or_path,
                        "a file URL needs an absolute path (file:///dir/corpus)",
                    ));
                }
                return Self::local(Path::new(rest)).map(|mut l| {
                    l.url = url_or_path.to_string();
                    l
                });
            }
            "s3" | "s3a" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "az" | "abfs" | "abfss" | "azure" | "adl" => Scheme::Azure,
            "http" | "https" => Scheme::Http,
            other => {
                return Err(bad_url(
                    url_or_path,
                    format!(
                        "unsupported URL scheme {other:?}: use s3://, gs://, az://, http(s)://, \
                         file:// or a local path"
                    ),
                ))
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            let what = match scheme {
                Scheme::Http => "host",
                Scheme::Azure => "container",
                _ => "bucket",
            };
            return Err(bad_url(url_or_path, format!("the URL names no {what}")));
        }
        let base = format!("{scheme_text}://{authority}");
        let path = path.trim_end_matches('/');
        let store = build_store(scheme, url_or_path, options)?;
        let prefix = ObjectPath::parse(path)
            .map_err(|e| bad_url(url_or_path, format!("not a valid object path: {e}")))?;
        // HTTP stores take the URL's path as part of their base: the prefix is relative to it.
        let prefix = if scheme == Scheme::Http {
            ObjectPath::default()
        } else {
            prefix
        };
        Ok(Location {
            url: url_or_path.trim_end_matches('/').to_string(),
            scheme,
            store,
            prefix,
            base: if scheme == Scheme::Http {
                url_or_path.trim_end_matches('/').to_string()
            } else {
                base
            },
            local_root: None,
        })
    }

    fn local(path: &Path) -> Result<Location> {
        let shown = path.display().to_string();
        let abs = std::path::absolute(path)
            .map_err(|e| Error::io(path, "resolving the corpus path", e))?;
        let store = LocalFileSystem::new();
        let prefix = ObjectPath::from_absolute_path(&abs)
            .map_err(|e| bad_url(&shown, format!("not a usable local path: {e}")))?;
        Ok(Location {
            url: shown,
            scheme: Scheme::Local,
            store: Arc::new(store),
            prefix,
            base: "file://".into(),
            local_root: Some(abs),
        })
    }

    /// The URL or path as given (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The kind of store.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
    /// The corpus prefix inside the store.
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }
    /// `scheme://authority` of the store (the whole base URL for HTTP), the key under which
    /// a query engine's runtime registers it.
    pub fn base_url(&self) -> &str {
        &self.base
    }
    /// The local directory, for a plain path or `file://`.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }
    /// The object path of `rel` (a `/`-separated path inside the corpus).
    pub fn child(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }
    /// The URL of `rel` inside the corpus, for messages.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel.trim_start_matches('/'))
    }
}

fn bad_url(url: &str, msg: impl Into<String>) -> Error {
    Error::url(ErrorKind::InvalidUrl, url, msg)
}

/// The store's own retries are off: [`super::RangeReader`] retries with its own bound, so that
/// the number of attempts is one setting and its failure names the part and range.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

fn env_or(options: &StoreOptions, key: &str) -> Option<String> {
    let from_opts = options
        .options
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.clone());
    from_opts.or_else(|| {
        options
            .from_env
            .then(|| std::env::var(key.to_ascii_uppercase()).ok())
            .flatten()
    })
}

fn build_store(scheme: Scheme, url: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let timeout = format!("{}ms", options.timeout.as_millis());
    let connect = format!("{}ms", options.connect_timeout.as_millis());
    let config_err =
        |key: &str, e: object_store::Error| bad_url(url, format!("configuration key {key:?}: {e}"));
    let build_err = |e: object_store::Error| {
        let msg = e.to_string();
        bad_url(url, msg).with_source(e)
    };
    let store: Arc<dyn ObjectStore> = match scheme {
        Scheme::S3 => {
            let mut b = if options.from_env {
                AmazonS3Builder::from_env()
            } else {
                AmazonS3Builder::new()
            };
            for (k, v) in &options.options {
                // The AWS SDKs' switch, read by `check_s3_credentials`, not a builder key.
                if k.eq_ignore_ascii_case("aws_ec2_metadata_disabled") {
                    continue;
                }
                let key: AmazonS3ConfigKey = k.parse().map_err(|e| config_err(k, e))?;
                b = b.with_config(key, v);
            }
            b = b
                .with_url(url)
                .with_retry(no_retries())
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                    &timeout,
                )
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect,
                );
            check_s3_credentials(&b, url, options)?;
            Arc::new(b.build().map_err(build_err)?)
        }
        Scheme::Gcs => {
            let mut b = if options.from_env {
                GoogleCloudStorageBuilder::from_env()
            } else {
                GoogleCloudStorageBuilder::new()
            };
            for (k, v) in &options.options {
                let key: GoogleConfigKey = k.parse().map_err(|e| config_err(k, e))?;
                b = b.with_config(key, v);
            }
            b = b
                .with_url(url)
                .with_retry(no_retries())
                .with_config(GoogleConfigKey::Client(ClientConfigKey::Timeout), &timeout)
                .with_config(
                    GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect,
                );
            Arc::new(b.build().map_err(build_err)?)
        }
        Scheme::Azure => {
            let mut b = if options.from_env {
                MicrosoftAzureBuilder::from_env()
            } else {
                MicrosoftAzureBuilder::new()
            };
            for (k, v) in &options.options {
                let key: AzureConfigKey = k.parse().map_err(|e| config_err(k, e))?;
                b = b.with_config(key, v);
            }
            b = b
                .with_url(url)
                .with_retry(no_retries())
                .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), &timeout)
                .with_config(
                    AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect,
                );
            Arc::new(b.build().map_err(build_err)?)
        }
        Scheme::Http => {
            let mut b = HttpBuilder::new();
            for (k, v) in &options.options {
                let key: ClientConfigKey = k.parse().map_err(|e| config_err(k, e))?;
                b = b.with_config(key, v);
            }
            b = b
                .with_url(url)
                .with_retry(no_retries())
                .with_config(ClientConfigKey::Timeout, &timeout)
                .with_config(ClientConfigKey::ConnectTimeout, &connect);
            Arc::new(b.build().map_err(build_err)?)
        }
        Scheme::Local => unreachable!("local locations are built by Location::local"),
    };
    Ok(store)
}

/// Refuses an S3 location with no way to get credentials, before any request: otherwise the
/// first request would wait on the instance metadata service of a machine that has none.
/// Credentials may come from static keys, a web identity token, a container credentials URI,
/// `aws_skip_signature` (a public bucket), or the instance metadata service (unless
/// `AWS_EC2_METADATA_DISABLED=true`, the AWS SDKs' switch).
fn check_s3_credentials(b: &AmazonS3Builder, url: &str, options: &StoreOptions) -> Result<()> {
    let has = |k: AmazonS3ConfigKey| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let skip = b
        .get_config_value(&AmazonS3ConfigKey::SkipSignature)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    let keys = has(AmazonS3ConfigKey::AccessKeyId);
    if keys && !has(AmazonS3ConfigKey::SecretAccessKey) {
        return Err(Error::url(
            ErrorKind::Credentials,
            url,
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        ));
    }
    let other = has(AmazonS3ConfigKey::WebIdentityTokenFile)
        || has(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || has(AmazonS3ConfigKey::ContainerCredentialsFullUri);
    let imds = !env_or(options, "aws_ec2_metadata_disabled")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    if keys || skip || other || imds {
        return Ok(());
    }
    Err(Error::url(
        ErrorKind::Credentials,
        url,
        "no credentials for S3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
         AWS_WEB_IDENTITY_TOKEN_FILE), or AWS_SKIP_SIGNATURE=true for a public bucket",
    ))
}
