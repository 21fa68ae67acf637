//! Against a real registry (Debian's `docker-registry`): pushes with this crate's uploads
//! (monolithic, chunked, cross-repository mount), then lazy verified reads that fetch far fewer
//! bytes than the blob, anonymously, with htpasswd basic auth (credentials from a docker
//! `config.json`) and with a token server (GET and OAuth2 POST token requests).

mod support;

use std::sync::Arc;

use estargz_io::auth::{Credentials, Keychain, TokenMethod};
use estargz_io::config::RegistryConfig;
use estargz_io::http::EngineOptions;
use estargz_io::layer::LayerOptions;
use estargz_io::registry::RegistryClient;
use estargz_io::source::{CountingSource, RegistryOptions, RegistrySource};
use estargz_io::{Reference, RemoteLayer};
use support::registry::{self, Auth, PASS, USER};
use support::{expected_file, fast_retry, mem_cache, vector_blob, TestBlob};

fn options(host: &str, keychain: Keychain, method: TokenMethod) -> RegistryOptions {
    RegistryOptions {
        config: RegistryConfig::plain_http(host),
        keychain: Arc::new(keychain),
        token_method: method,
        engine: EngineOptions {
            retry: fast_retry(),
            ..EngineOptions::default()
        },
    }
}

/// Opens the blob lazily and reads a few files; returns the bytes the source delivered.
async fn lazy_read(host: &str, repo: &str, blob: &TestBlob, opts: RegistryOptions) -> u64 {
    let reference: Reference = format!("{host}/{repo}@{}", blob.digest())
        .parse()
        .expect("reference");
    let src = Arc::new(CountingSource::new(
        RegistrySource::new(&reference, opts).expect("source"),
    ));
    let layer = RemoteLayer::open(
        src.clone(),
        mem_cache(),
        LayerOptions {
            tail_size: 64 << 10,
            ..LayerOptions::with_toc_digest(blob.toc_digest)
        },
    )
    .await
    .expect("open");
    for f in [
        "nodotslash/file.txt",
        "sizes/64k",
        "links/target.txt",
        "unicode/emoji-😀.txt",
    ] {
        assert_eq!(
            layer.read_file(f).await.expect(f),
            expected_file(blob, f),
            "{f}"
        );
    }
    let c = src.counters();
    assert!(
        c.bytes * 10 < blob.bytes.len() as u64,
        "fetched {} of {} bytes",
        c.bytes,
        blob.bytes.len()
    );
    c.bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_registry_push_and_lazy_read() {
    let Some(reg) = registry::start(Auth::None) else {
        return;
    };
    let blob = vector_blob("edge-gzip-chunk64k");
    let client = RegistryClient::new(
        &reg.host,
        options(&reg.host, Keychain::empty(), TokenMethod::Get),
    )
    .expect("client");
    let digest = client
        .upload_blob("test/layer", blob.bytes.clone())
        .await
        .expect("upload");
    assert_eq!(digest, blob.digest());
    assert!(client
        .blob_exists("test/layer", &digest)
        .await
        .expect("head"));
    lazy_read(
        &reg.host,
        "test/layer",
        &blob,
        options(&reg.host, Keychain::empty(), TokenMethod::Get),
    )
    .await;

    // The open is one request: footer and TOC together, with the length from Content-Range.
    let reference: Reference = format!("{}/test/layer@{}", reg.host, blob.digest())
        .parse()
        .expect("ref");
    let src = Arc::new(
        RegistrySource::new(
            &reference,
            options(&reg.host, Keychain::empty(), TokenMethod::Get),
        )
        .expect("src"),
    );
    RemoteLayer::open(
        src.clone(),
        mem_cache(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect("open");
    assert_eq!(src.http_counters().requests, 1);

    // Multi-range requests work against distribution's server: three ranges, one request.
    let before = src.http_counters().requests;
    let parts =
        estargz_io::BlobSource::read_ranges(&*src, &[0..10, 1000..1100, 2_000_000..2_000_001])
            .await
            .expect("ranges");
    assert_eq!(&parts[1][..], &blob.bytes[1000..1100]);
    assert_eq!(src.http_counters().requests - before, 1);
    assert_eq!(src.http_counters().multi_range_fallbacks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_mount_and_manifest() {
    let Some(reg) = registry::start(Auth::None) else {
        return;
    };
    let blob = vector_blob("edge-zstd-chunk64k-prio");
    let opts = || options(&reg.host, Keychain::empty(), TokenMethod::Get);
    let client = RegistryClient::new(&reg.host, opts()).expect("client");
    let digest = client
        .upload_blob_chunked("src/repo", blob.bytes.clone(), 700 << 10)
        .await
        .expect("chunked upload");
    assert_eq!(digest, blob.digest());
    assert!(client
        .mount_blob("dst/repo", "src/repo", &digest)
        .await
        .expect("mount"));
    assert!(client.blob_exists("dst/repo", &digest).await.expect("head"));
    lazy_read(&reg.host, "dst/repo", &blob, opts()).await;

    // A manifest referencing it, by tag, read back byte for byte.
    let config = bytes::Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let config_digest = client
        .upload_blob("dst/repo", config.clone())
        .await
        .expect("config");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{digest}","size":{}}}]}}"#,
        estargz_io::registry::OCI_MANIFEST,
        config.len(),
        blob.bytes.len()
    );
    let md = client
        .put_manifest(
            "dst/repo",
            "v1",
            estargz_io::registry::OCI_MANIFEST,
            bytes::Bytes::from(manifest.clone()),
        )
        .await
        .expect("manifest");
    let got = client.get_manifest("dst/repo", "v1").await.expect("get");
    assert_eq!(got.digest, md);
    assert_eq!(&got.bytes[..], manifest.as_bytes());
    let got = client
        .get_manifest("dst/repo", &md.to_string())
        .await
        .expect("by digest");
    assert_eq!(got.media_type, estargz_io::registry::OCI_MANIFEST);
    assert_eq!(
        client
            .get_blob("dst/repo", &config_digest, 1 << 20)
            .await
            .expect("blob"),
        config
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_with_docker_config_credentials() {
    let Some(reg) = registry::start(Auth::Htpasswd) else {
        return;
    };
    let blob = vector_blob("edge-gzip-chunk64k");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.json");
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"http://{}/v2/":{{"auth":"{auth}"}}}}}}"#,
            reg.host
        ),
    )
    .expect("write");
    let kc = || Keychain::empty().with_file(&cfg);
    let client =
        RegistryClient::new(&reg.host, options(&reg.host, kc(), TokenMethod::Get)).expect("client");
    client
        .upload_blob("auth/layer", blob.bytes.clone())
        .await
        .expect("upload");
    lazy_read(
        &reg.host,
        "auth/layer",
        &blob,
        options(&reg.host, kc(), TokenMethod::Get),
    )
    .await;

    // Without credentials: an authentication error that says so, not a panic or a hang.
    let reference: Reference = format!("{}/auth/layer@{}", reg.host, blob.digest())
        .parse()
        .expect("ref");
    let src = Arc::new(
        RegistrySource::new(
            &reference,
            options(&reg.host, Keychain::empty(), TokenMethod::Get),
        )
        .expect("src"),
    );
    let err = RemoteLayer::open(
        src,
        mem_cache(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect_err("no credentials");
    assert!(err.to_string().contains("no credentials"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_get_and_oauth_post() {
    let Some(reg) = registry::start(Auth::Token) else {
        return;
    };
    let blob = vector_blob("edge-gzip-chunk64k");
    let kc = || Keychain::empty().with(&reg.host, Credentials::basic(USER, PASS));
    let client = RegistryClient::new(
        &reg.host,
        options(&reg.host, kc(), TokenMethod::PostThenGet),
    )
    .expect("client");
    client
        .upload_blob("tok/layer", blob.bytes.clone())
        .await
        .expect("upload");
    lazy_read(
        &reg.host,
        "tok/layer",
        &blob,
        options(&reg.host, kc(), TokenMethod::Get),
    )
    .await;
    lazy_read(
        &reg.host,
        "tok/layer",
        &blob,
        options(&reg.host, kc(), TokenMethod::PostThenGet),
    )
    .await;

    let reference: Reference = format!("{}/tok/layer@{}", reg.host, blob.digest())
        .parse()
        .expect("ref");
    let src = Arc::new(
        RegistrySource::new(
            &reference,
            options(&reg.host, Keychain::empty(), TokenMethod::Get),
        )
        .expect("src"),
    );
    let err = RemoteLayer::open(
        src,
        mem_cache(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect_err("anonymous");
    assert!(
        err.to_string().contains("token request anonymously"),
        "{err}"
    );
}
