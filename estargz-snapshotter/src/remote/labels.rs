//! What the remote-snapshot labels say about a layer (RUNTIME-BEHAVIOUR §3): the image
//! reference, the layer digest, the image's other layers, alternative URLs, the TOC digest,
//! the prefetch size, whether verification may be skipped.
//!
//! The CRI label set is tried first, then `remote/stargz.*`; the first with both a reference
//! and a parseable layer digest wins.

use std::collections::BTreeMap;

use estargz::Digest;

use crate::snapshotter::Fallback;

/// The image reference (containerd CRI).
pub const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
/// The layer digest (containerd CRI).
pub const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
/// The image's layer digests (containerd CRI).
pub const CRI_IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";
/// The image reference (`estargz image pull`, `ctr-remote images rpull`).
pub const REFERENCE: &str = "containerd.io/snapshot/remote/stargz.reference";
/// The layer digest.
pub const DIGEST: &str = "containerd.io/snapshot/remote/stargz.digest";
/// The image's layer digests, starting at this layer.
pub const LAYERS: &str = "containerd.io/snapshot/remote/stargz.layers";
/// Alternative URLs of this layer.
pub const URLS: &str = "containerd.io/snapshot/remote/urls";
/// Default prefetch size (bytes).
pub const PREFETCH: &str = "containerd.io/snapshot/remote/stargz.prefetch";
/// Mount without verification (honoured only with `allow_no_verification`).
pub const SKIP_VERIFY: &str = "containerd.io/snapshot/remote/stargz.skipverify";
/// The TOC digest from the manifest's layer annotation.
pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// A layer to mount, as the labels describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The image reference (`host/repo:tag` or `@digest`).
    pub reference: String,
    /// The layer blob's digest.
    pub digest: Digest,
    /// The other layers of the image (digests), for parallel prefetch.
    pub layers: Vec<String>,
    /// Alternative URLs of the blob.
    pub urls: Vec<String>,
    /// The TOC digest to verify against; `None` only when verification is skipped.
    pub toc_digest: Option<Digest>,
    /// Prefetch size from the labels, if any.
    pub prefetch_size: Option<u64>,
}

/// Verification policy from the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyPolicy {
    /// `disable_verification`.
    pub disable: bool,
    /// `allow_no_verification`.
    pub allow_skip_label: bool,
}

fn split(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// Reads the labels. Errors are fallbacks with a reason.
pub fn parse(
    labels: &BTreeMap<String, String>,
    policy: VerifyPolicy,
) -> Result<LayerRef, Fallback> {
    let sets = [
        (CRI_IMAGE_REF, CRI_LAYER_DIGEST, CRI_IMAGE_LAYERS),
        (REFERENCE, DIGEST, LAYERS),
    ];
    let mut found = None;
    for (r, d, l) in sets {
        if let (Some(reference), Some(digest)) = (labels.get(r), labels.get(d)) {
            if let Ok(digest) = Digest::parse(digest) {
                found = Some((reference.clone(), digest, split(labels.get(l))));
                break;
            }
        }
    }
    let Some((reference, digest, layers)) = found else {
        return Err(Fallback {
            kind: "no-labels",
            reason: "no image reference and layer digest in the snapshot labels".to_owned(),
        });
    };
    let toc_digest = if policy.disable {
        None
    } else if let Some(t) = labels.get(TOC_DIGEST) {
        Some(Digest::parse(t).map_err(|e| Fallback {
            kind: "toc-digest",
            reason: format!("invalid {TOC_DIGEST} label {t:?}: {e}"),
        })?)
    } else if labels.contains_key(SKIP_VERIFY) && policy.allow_skip_label {
        tracing::warn!(digest = %digest, "mounting without verification (stargz.skipverify label)");
        None
    } else {
        return Err(Fallback {
            kind: "no-toc-digest",
            reason: format!(
                "the layer has no TOC digest ({TOC_DIGEST} annotation): not an eStargz layer, or \
                 converted without it; digest of TOC JSON must be passed to mount it verified"
            ),
        });
    };
    Ok(LayerRef {
        reference,
        digest,
        layers,
        urls: split(labels.get(URLS)),
        toc_digest,
        prefetch_size: labels.get(PREFETCH).and_then(|p| p.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    const T: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000002";

    fn l(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_select_and_verify() {
        let p = VerifyPolicy::default();
        let r = parse(
            &l(&[
                (REFERENCE, "r/x:1"),
                (DIGEST, D),
                (LAYERS, &format!("{D},{T}")),
                (TOC_DIGEST, T),
            ]),
            p,
        )
        .unwrap();
        assert_eq!(r.reference, "r/x:1");
        assert_eq!(r.layers.len(), 2);
        assert_eq!(r.toc_digest.unwrap().to_string(), T);
        // CRI set wins
        let r = parse(
            &l(&[
                (REFERENCE, "a"),
                (DIGEST, D),
                (CRI_IMAGE_REF, "b"),
                (CRI_LAYER_DIGEST, D),
                (TOC_DIGEST, T),
            ]),
            p,
        )
        .unwrap();
        assert_eq!(r.reference, "b");
        assert_eq!(
            parse(&l(&[(REFERENCE, "a")]), p).unwrap_err().kind,
            "no-labels"
        );
        assert_eq!(
            parse(&l(&[(REFERENCE, "a"), (DIGEST, D)]), p)
                .unwrap_err()
                .kind,
            "no-toc-digest"
        );
        assert_eq!(
            parse(&l(&[(REFERENCE, "a"), (DIGEST, D), (TOC_DIGEST, "x")]), p)
                .unwrap_err()
                .kind,
            "toc-digest"
        );
        let skip = l(&[(REFERENCE, "a"), (DIGEST, D), (SKIP_VERIFY, "")]);
        assert!(parse(&skip, p).is_err());
        assert!(parse(
            &skip,
            VerifyPolicy {
                allow_skip_label: true,
                ..p
            }
        )
        .unwrap()
        .toc_digest
        .is_none());
    }
}
