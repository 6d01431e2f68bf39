use super::*;

fn temp_ca(what: &str) -> Authority {
    let dir = crate::server::test_dir(what).join("ca");
    Authority::load(CaOptions::new(CaSource::SelfSigned(dir))).expect("CA")
}

/// A CSR for `sans` (URIs) with a fresh key.
fn csr(sans: &[&str]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

#[test]
fn a_self_signed_root_is_created_once_and_its_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::server::test_dir("ca-root").join("ca");
    let first = Authority::load(CaOptions::new(CaSource::SelfSigned(dir.clone()))).unwrap();
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("ca-key.pem"), 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Loaded again, not created again: the same root.
    let again = Authority::load(CaOptions::new(CaSource::SelfSigned(dir))).unwrap();
    assert_eq!(first.trust_bundle(), again.trust_bundle());
}

#[test]
fn a_workload_certificate_names_its_spiffe_identity_and_chains_to_the_root() {
    let ca = temp_ca("ca-sign");
    let signed = ca
        .sign(&csr(&[REVIEWS]), REVIEWS, Duration::from_secs(60))
        .unwrap();
    assert_eq!(signed.cert_chain.len(), 2, "leaf, then the trust bundle");
    assert_eq!(signed.cert_chain[1], ca.trust_bundle());
    let leaf = CertificateDer::from_pem_slice(signed.cert_chain[0].as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => (*u).to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(uris, [REVIEWS]);
    let v = cert.validity();
    assert_eq!(
        (v.not_after.timestamp() - v.not_before.timestamp()),
        60,
        "the requested TTL"
    );
    assert!(!cert.is_ca());
    // The CA's own key signed it.
    let root = CertificateDer::from_pem_slice(ca.trust_bundle().as_bytes()).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(&root).unwrap();
    cert.verify_signature(Some(root.public_key())).unwrap();
}

#[test]
fn the_ttl_defaults_and_is_capped() {
    let dir = crate::server::test_dir("ca-ttl").join("ca");
    let mut options = CaOptions::new(CaSource::SelfSigned(dir));
    options.default_ttl = Duration::from_secs(100);
    options.max_ttl = Duration::from_secs(200);
    let ca = Authority::load(options).unwrap();
    let lifetime = |ttl: u64| {
        let signed = ca
            .sign(&csr(&[REVIEWS]), REVIEWS, Duration::from_secs(ttl))
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(signed.cert_chain[0].as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
    };
    assert_eq!(lifetime(0), 100);
    assert_eq!(lifetime(150), 150);
    assert_eq!(lifetime(10_000), 200);
}

#[test]
fn a_csr_for_another_identity_or_several_is_refused() {
    let ca = temp_ca("ca-refuse");
    let other = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    for sans in [vec![other], vec![REVIEWS, other], vec![]] {
        let err = ca
            .sign(&csr(&sans), REVIEWS, Duration::ZERO)
            .expect_err("not this credential's identity");
        assert!(matches!(err, SignError::NotYours { .. }), "{err}");
    }
    let err = ca
        .sign(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            REVIEWS,
            Duration::ZERO,
        )
        .unwrap_err();
    assert!(matches!(err, SignError::BadCsr(_)), "{err}");
}

#[test]
fn a_plug_in_ca_signs_with_its_intermediate_and_hands_out_its_root() {
    // root -> intermediate (the plug-in's ca-cert.pem), in Istio's cacerts layout.
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.signed_by(&ca_key, &root_issuer).unwrap();
    let dir = crate::server::test_dir("ca-plugin");
    std::fs::write(dir.join("ca-cert.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), ca_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", ca_cert.pem(), root.pem()),
    )
    .unwrap();
    let ca = Authority::load(CaOptions::new(CaSource::PlugIn(dir.clone()))).unwrap();
    let signed = ca.sign(&csr(&[REVIEWS]), REVIEWS, Duration::ZERO).unwrap();
    // leaf, the intermediate, the root (once: cert-chain.pem's copy is not repeated).
    assert_eq!(signed.cert_chain.len(), 3);
    assert_eq!(signed.cert_chain[1].trim(), ca_cert.pem().trim());
    assert_eq!(signed.cert_chain[2].trim(), root.pem().trim());

    // Root rotation: a second root joins the trust bundle, and a new intermediate under it
    // signs; the reloading authority picks the files up, and a bad edit keeps the last one.
    let reloading = Reloading::new(ca);
    assert!(!reloading.poll().unwrap(), "nothing changed");
    let new_root_key = KeyPair::generate().unwrap();
    let mut new_root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    new_root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    new_root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let new_root = new_root_params.self_signed(&new_root_key).unwrap();
    let new_issuer = Issuer::new(new_root_params, new_root_key);
    let new_ca_key = KeyPair::generate().unwrap();
    let new_ca_cert = ca_params.signed_by(&new_ca_key, &new_issuer).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("ca-cert.pem"), new_ca_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), new_ca_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("root-cert.pem"),
        format!("{}{}", root.pem(), new_root.pem()),
    )
    .unwrap();
    std::fs::write(dir.join("cert-chain.pem"), new_ca_cert.pem()).unwrap();
    assert!(reloading.poll().unwrap(), "the new files are in force");
    let signed = reloading
        .current()
        .sign(&csr(&[REVIEWS]), REVIEWS, Duration::ZERO)
        .unwrap();
    assert_eq!(signed.cert_chain[1].trim(), new_ca_cert.pem().trim());
    let bundle = signed.cert_chain.last().unwrap();
    assert!(bundle.contains(root.pem().trim()) && bundle.contains(new_root.pem().trim()));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("ca-key.pem"), "not a key").unwrap();
    assert!(reloading.poll().is_err());
    assert!(
        reloading
            .current()
            .trust_bundle()
            .contains(new_root.pem().trim())
    );

    // A missing file is named.
    std::fs::remove_file(dir.join("root-cert.pem")).unwrap();
    let err = Authority::load(CaOptions::new(CaSource::PlugIn(dir))).unwrap_err();
    assert!(err.to_string().contains("root-cert.pem"), "{err}");
}
