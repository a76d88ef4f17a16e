//! `verify_chain` against chains made here with rcgen: root -> intermediate -> leaf.

#![allow(clippy::unwrap_used)]

use paymux_crypto::{Certificate, CryptoError, verify_chain};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-29 12:00:00 UTC);

fn params(cn: &str, ca: bool, not_after: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = datetime!(2026-01-01 00:00:00 UTC);
    p.not_after = not_after;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p
}

struct Chain {
    root: Certificate,
    intermediate: Certificate,
    leaf: Certificate,
}

fn chain(leaf_not_after: OffsetDateTime) -> Chain {
    let far = datetime!(2036-01-01 00:00:00 UTC);
    let root_key = KeyPair::generate().unwrap();
    let root_params = params("Test Root", true, far);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let mid_key = KeyPair::generate().unwrap();
    let mid_params = params("Test Intermediate", true, far);
    let mid = mid_params.signed_by(&mid_key, &root_issuer).unwrap();
    let mid_issuer = Issuer::new(mid_params, mid_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params("041@1@Owner@2", false, leaf_not_after).signed_by(&leaf_key, &mid_issuer);
    Chain {
        root: Certificate::from_pem(&root.pem()).unwrap(),
        intermediate: Certificate::from_pem(&mid.pem()).unwrap(),
        leaf: Certificate::from_pem(&leaf.unwrap().pem()).unwrap(),
    }
}

#[test]
fn a_leaf_issued_through_the_intermediate_verifies() {
    let c = chain(datetime!(2030-01-01 00:00:00 UTC));
    verify_chain(&c.leaf, std::slice::from_ref(&c.intermediate), &c.root, NOW).unwrap();
    assert_eq!(c.leaf.common_name(), Some("041@1@Owner@2"));
}

#[test]
fn a_leaf_from_another_root_is_refused() {
    let c = chain(datetime!(2030-01-01 00:00:00 UTC));
    let other = chain(datetime!(2030-01-01 00:00:00 UTC));
    let err = verify_chain(&c.leaf, &[other.intermediate], &other.root, NOW);
    assert!(matches!(err, Err(CryptoError::Chain(_))), "{err:?}");
    let err = verify_chain(&c.leaf, &[], &c.root, NOW);
    assert!(matches!(err, Err(CryptoError::Chain(_))), "{err:?}");
}

#[test]
fn the_path_must_run_through_the_given_intermediate() {
    let c = chain(datetime!(2030-01-01 00:00:00 UTC));
    // The intermediate taken as the root would be a shorter, different path.
    let err = verify_chain(&c.leaf, std::slice::from_ref(&c.intermediate), &c.intermediate, NOW);
    assert!(matches!(err, Err(CryptoError::Chain(_))), "{err:?}");
    let other = chain(datetime!(2030-01-01 00:00:00 UTC));
    let err = verify_chain(&c.leaf, &[other.intermediate, c.intermediate], &c.root, NOW);
    assert!(matches!(err, Err(CryptoError::Chain(_))), "{err:?}");
}

#[test]
fn an_expired_leaf_is_refused_at_the_given_time_only() {
    let c = chain(datetime!(2026-11-26 00:00:00 UTC));
    let err = verify_chain(&c.leaf, std::slice::from_ref(&c.intermediate), &c.root, NOW);
    assert!(matches!(err, Err(CryptoError::Chain(ref e)) if e.contains("Expired")), "{err:?}");
    let before = datetime!(2026-11-01 00:00:00 UTC);
    verify_chain(&c.leaf, &[c.intermediate], &c.root, before).unwrap();
}
