//! The registry transfers whole-image conversion uses, against a real registry (Debian's
//! `docker-registry`): a blob uploaded from a file in pieces (several PATCH requests) and
//! streamed back into a file with its digest and size checked.

mod support;

use std::io::{Read, Seek, Write};
use std::sync::Arc;

use estargz::Digest;
use estargz_io::config::RegistryConfig;
use estargz_io::http::EngineOptions;
use estargz_io::registry::RegistryClient;
use estargz_io::source::RegistryOptions;
use support::fast_retry;
use support::registry::{self, Auth};

fn client(host: &str) -> RegistryClient {
    let opts = RegistryOptions {
        config: RegistryConfig::plain_http(host),
        keychain: Arc::new(estargz_io::auth::Keychain::default()),
        engine: EngineOptions {
            retry: fast_retry(),
            ..EngineOptions::default()
        },
        ..RegistryOptions::default()
    };
    RegistryClient::new(host, opts).expect("client")
}

#[tokio::test]
async fn file_uploads_in_pieces_and_streams_back_checked() {
    let Some(reg) = registry::start(Auth::None) else {
        return;
    };
    let reg_client = client(&reg.host);
    // 100 KiB of hashed bytes, uploaded in 7 000-byte pieces (15 PATCH requests).
    let mut data = Vec::new();
    let mut block = Digest::of(b"seed").0.to_vec();
    while data.len() < 100 << 10 {
        block = Digest::of(&block).0.to_vec();
        data.extend_from_slice(&block);
    }
    let mut f = tempfile::NamedTempFile::new().expect("tmp");
    f.write_all(&data).expect("write");
    let digest = Digest::of(&data);
    let wrote = reg_client
        .upload_blob_file("img/blobs", f.path(), &digest, 7000)
        .await
        .expect("upload");
    assert!(wrote);
    assert!(reg_client
        .blob_exists("img/blobs", &digest)
        .await
        .expect("exists"));
    // A second upload of the same blob sends nothing.
    let wrote = reg_client
        .upload_blob_file("img/blobs", f.path(), &digest, 7000)
        .await
        .expect("upload again");
    assert!(!wrote);

    // Streamed back into a file: the same bytes.
    let out = tempfile::tempfile().expect("tmp");
    let mut tf = tokio::fs::File::from_std(out.try_clone().expect("clone"));
    let n = reg_client
        .get_blob_to_file("img/blobs", &digest, data.len() as u64, &mut tf)
        .await
        .expect("download");
    assert_eq!(n, data.len() as u64);
    let mut back = Vec::new();
    let mut out = out;
    out.rewind().expect("rewind");
    out.read_to_end(&mut back).expect("read");
    assert!(back == data);

    // A descriptor size that does not match is an error that says so.
    let mut tf = tokio::fs::File::from_std(tempfile::tempfile().expect("tmp"));
    let err = reg_client
        .get_blob_to_file("img/blobs", &digest, 1000, &mut tf)
        .await
        .expect_err("too large");
    assert!(
        err.to_string().contains("larger than its 1000 bytes"),
        "{err}"
    );
    let err = reg_client
        .get_blob_to_file("img/blobs", &digest, data.len() as u64 + 1, &mut tf)
        .await
        .expect_err("too small");
    assert!(err.to_string().contains("its descriptor says"), "{err}");
}
