use super::*;
use crate::{ConfigView, MeshConfig, ProxyNode};

const VIRTUAL_SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: front}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  http:
  - directResponse: {status: 200}
"#;

/// Translates a Gateway `gw` in namespace `front` with these servers (YAML list) for the
/// ingress gateway, with credentials read from files under [`DIR`].
fn translate(servers: &str) -> ProxyResources {
    let mesh = MeshConfig {
        credential_dir: DIR.to_owned(),
        ..MeshConfig::default()
    };
    translate_with(servers, "", &mesh)
}

/// The same, with more resources (YAML documents) and a mesh config. The gateway proxy runs
/// in namespace `istio-system`, the Gateway resource is in `front`.
fn translate_with(servers: &str, more: &str, mesh: &MeshConfig) -> ProxyResources {
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: front}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: {servers}\n"
    );
    let loaded = weft_api::load_str(
        "test.yaml",
        &format!("{gateway}---\n{VIRTUAL_SERVICE}---\n{more}"),
    );
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let view = ConfigView::new(loaded.resources, Vec::new());
    let mut node =
        ProxyNode::parse_id("router~10.0.0.5~gw-0.istio-system~istio-system.svc.cluster.local")
            .expect("id");
    node.labels
        .insert("istio".to_owned(), "ingressgateway".to_owned());
    crate::translate(&node, mesh, &view)
}

fn certificates(res: &ProxyResources) -> Vec<proto::Certificate> {
    res.listeners
        .iter()
        .filter_map(|l| match &l.protocol {
            Some(proto::listener::Protocol::Http(h)) => h.tls.clone(),
            _ => None,
        })
        .flat_map(|t| t.certificates)
        .collect()
}

fn notes(res: &ProxyResources) -> Vec<(String, String)> {
    res.unsupported
        .iter()
        .map(|u| (u.field.clone(), u.reason.clone()))
        .collect()
}

fn validation(ca: &str, preferred: &str, sans: &[&str], optional: bool) -> proto::ClientValidation {
    proto::ClientValidation {
        ca_file: ca.to_owned(),
        preferred_ca_file: preferred.to_owned(),
        subject_alt_names: sans.iter().map(|s| (*s).to_owned()).collect(),
        optional,
        ..Default::default()
    }
}

const DIR: &str = "/etc/weft/credentials";

/// Servers, the client validation of each certificate, the fields noted.
type Case = (
    &'static str,
    Vec<Option<proto::ClientValidation>>,
    Vec<&'static str>,
);

#[test]
fn mutual_servers_carry_their_client_verification() {
    let cases: Vec<Case> = vec![
        (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: MUTUAL, credentialName: a, subjectAltNames: [client.example.com]}}]",
            vec![Some(validation(
                &format!("{DIR}/a/ca.crt"),
                &format!("{DIR}/a-cacert/ca.crt"),
                &["client.example.com"],
                false,
            ))],
            vec![],
        ),
        // Two credentials: the first one's CA verifies clients, for both certificates. A
        // caCrl is not read with them (Istio takes the CRL from the credential).
        (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: OPTIONAL_MUTUAL, credentialNames: [rsa, ecdsa], caCrl: /crl.pem}}]",
            vec![
                Some(validation(
                    &format!("{DIR}/rsa/ca.crt"),
                    &format!("{DIR}/rsa-cacert/ca.crt"),
                    &[],
                    true,
                ));
                2
            ],
            vec!["spec.servers[0].tls.caCrl"],
        ),
        // caCertCredentialName wins over the credential's own CA.
        (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: MUTUAL, credentialName: a, caCertCredentialName: clients}}]",
            vec![Some(validation(
                &format!("{DIR}/clients/ca.crt"),
                "",
                &[],
                false,
            ))],
            vec![],
        ),
        // With a credential, caCertificates is not read (as in Istio).
        (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: MUTUAL, credentialName: a, caCertificates: /ca.pem}}]",
            vec![Some(validation(
                &format!("{DIR}/a/ca.crt"),
                &format!("{DIR}/a-cacert/ca.crt"),
                &[],
                false,
            ))],
            vec!["spec.servers[0].tls.caCertificates"],
        ),
        // File paths; caCertCredentialName is read only with a credential.
        (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, \
             caCertificates: /ca.pem, caCrl: /crl.pem, caCertCredentialName: clients, \
             insecureSkipVerify: true}}]",
            vec![Some(proto::ClientValidation {
                crl_file: "/crl.pem".to_owned(),
                ..validation("/ca.pem", "", &[], true)
            })],
            vec![
                "spec.servers[0].tls.caCertCredentialName",
                "spec.servers[0].tls.insecureSkipVerify",
            ],
        ),
        // SIMPLE requests no client certificate; its subjectAltNames are noted.
        (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: SIMPLE, credentialName: a, subjectAltNames: [x]}}]",
            vec![None],
            vec!["spec.servers[0].tls.subjectAltNames"],
        ),
        // Per server on one port.
        (
            "[{port: {number: 443, name: https-a, protocol: HTTPS}, hosts: [a.example.com], \
             tls: {mode: SIMPLE, credentialName: a}}, \
             {port: {number: 443, name: https-b, protocol: HTTPS}, hosts: [b.example.com], \
             tls: {mode: MUTUAL, credentialName: b}}]",
            vec![
                None,
                Some(validation(
                    &format!("{DIR}/b/ca.crt"),
                    &format!("{DIR}/b-cacert/ca.crt"),
                    &[],
                    false,
                )),
            ],
            vec![],
        ),
    ];
    for (servers, want, want_notes) in cases {
        let res = translate(servers);
        let got: Vec<_> = certificates(&res)
            .into_iter()
            .map(|c| c.client_validation)
            .collect();
        assert_eq!(got, want, "{servers}");
        let fields: Vec<String> = notes(&res).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, want_notes, "{servers}");
    }
}

#[test]
fn istio_mutual_servers_are_left_out_not_served_in_plaintext() {
    let res = translate(
        "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
         tls: {mode: ISTIO_MUTUAL}}]",
    );
    assert!(res.listeners.is_empty(), "{:?}", res.listeners);
    let notes = notes(&res);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "spec.servers[0].tls.mode");
    assert!(notes[0].1.contains("left out"), "{}", notes[0].1);

    // Beside a SIMPLE server on the same port: its hosts get no virtual host there.
    let res = translate(
        "[{port: {number: 443, name: https-a, protocol: HTTPS}, hosts: [a.example.com], \
         tls: {mode: SIMPLE, credentialName: a}}, \
         {port: {number: 443, name: https-b, protocol: HTTPS}, hosts: [b.example.com], \
         tls: {mode: ISTIO_MUTUAL}}]",
    );
    let domains: Vec<&str> = res
        .route_configs
        .iter()
        .flat_map(|rc| &rc.virtual_hosts)
        .flat_map(|vh| &vh.domains)
        .map(String::as_str)
        .collect();
    assert_eq!(domains, ["a.example.com"]);
}

#[test]
fn istio_mutual_servers_are_mesh_mtls_on_a_gateway_with_a_workload_certificate() {
    let loaded = weft_api::load_str(
        "test.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: front}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 443, name: https, \
             protocol: HTTPS}}, hosts: [a.example.com], tls: {{mode: ISTIO_MUTUAL}}}}]\n---\n{VIRTUAL_SERVICE}"
        ),
    );
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let view = ConfigView::new(loaded.resources, Vec::new());
    let mut node =
        ProxyNode::parse_id("router~10.0.0.5~gw-0.istio-system~istio-system.svc.cluster.local")
            .expect("id");
    node.labels
        .insert("istio".to_owned(), "ingressgateway".to_owned());
    node.labels
        .insert("security.istio.io/tlsMode".to_owned(), "istio".to_owned());
    let res = crate::translate(&node, &MeshConfig::default(), &view);
    assert!(notes(&res).is_empty(), "{:?}", notes(&res));
    let [listener] = res.listeners.as_slice() else {
        panic!("one listener: {:?}", res.listeners);
    };
    match &listener.protocol {
        Some(proto::listener::Protocol::Http(h)) => {
            assert!(h.tls.is_none());
            assert_eq!(
                h.mesh_tls.map(|m| m.mode()),
                Some(proto::mesh_tls::Mode::Strict)
            );
        }
        other => panic!("an HTTP listener: {other:?}"),
    }
    let domains: Vec<&str> = res
        .route_configs
        .iter()
        .flat_map(|rc| &rc.virtual_hosts)
        .flat_map(|vh| &vh.domains)
        .map(String::as_str)
        .collect();
    assert_eq!(domains, ["a.example.com"]);
}

#[test]
fn a_mutual_server_without_a_client_ca_is_left_out() {
    // weft-api refuses this; translation must still not serve the server without checking
    // clients (through another server's certificate on the port).
    let server: Server = yaml_serde::from_str(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: [b.example.com], \
         tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}}",
    )
    .expect("a server");
    let loaded = weft_api::load_str("test.yaml", VIRTUAL_SERVICE);
    let r = &loaded.resources[0];
    let mut notes = Notes::default();
    assert_eq!(
        server_kind(r, &server, "spec.servers[1]", true, &mut notes),
        None
    );
    let notes = notes.finish();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].reason.contains("no client CA"),
        "{}",
        notes[0].reason
    );
}

/// A `kubernetes.io/tls` Secret as `kubectl create secret tls` writes it, with `ca.crt` when
/// `ca` is given (base64 of short stand-ins: translation does not parse PEM).
fn tls_secret(namespace: &str, name: &str, cert: &str, ca: Option<&str>) -> String {
    let b64 = |s: &str| {
        // The three stand-ins used below, precomputed.
        match s {
            "CERT-A" => "Q0VSVC1B",
            "CERT-B" => "Q0VSVC1C",
            "KEY" => "S0VZ",
            "CA" => "Q0E=",
            "CA2" => "Q0Ey",
            other => panic!("no base64 for {other}"),
        }
    };
    let ca = ca.map_or(String::new(), |c| format!(", ca.crt: {}", b64(c)));
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}{ca}}}\n---\n",
        b64(cert),
        b64("KEY")
    )
}

fn secret_pem(res: &ProxyResources, name: &str) -> Option<proto::secret::Type> {
    res.secrets
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.r#type.clone())
}

#[test]
fn credentials_come_from_secrets_in_the_gateways_namespace() {
    let servers = "[{port: {number: 443, name: https-a, protocol: HTTPS}, hosts: [a.example.com], \
                   tls: {mode: SIMPLE, credentialName: a}}, \
                   {port: {number: 443, name: https-b, protocol: HTTPS}, hosts: [b.example.com], \
                   tls: {mode: SIMPLE, credentialName: b}}]";
    // a and b in the gateway's namespace; c there too but unused; a copy of a in the
    // Gateway's namespace, which is not where credentials are read from.
    let secrets = [
        tls_secret("istio-system", "a", "CERT-A", None),
        tls_secret("istio-system", "b", "CERT-B", None),
        tls_secret("istio-system", "c", "CERT-B", None),
        tls_secret("front", "a", "CERT-B", None),
    ]
    .concat();
    let res = translate_with(servers, &secrets, &MeshConfig::default());
    let certs = certificates(&res);
    let got: Vec<(&str, &[String], &str)> = certs
        .iter()
        .map(|c| {
            (
                c.secret.as_str(),
                c.server_names.as_slice(),
                c.cert_file.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "kubernetes://istio-system/a",
                &["a.example.com".to_owned()][..],
                ""
            ),
            (
                "kubernetes://istio-system/b",
                &["b.example.com".to_owned()][..],
                ""
            ),
        ]
    );
    // Only what the listeners name travels, key and certificate from the Secret.
    let names: Vec<&str> = res.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["kubernetes://istio-system/a", "kubernetes://istio-system/b"]
    );
    assert_eq!(
        secret_pem(&res, "kubernetes://istio-system/a"),
        Some(proto::secret::Type::TlsCertificate(proto::TlsCertificate {
            certificate_chain: "CERT-A".into(),
            private_key: "KEY".into(),
        }))
    );
    assert_eq!(notes(&res), []);
}

#[test]
fn a_missing_secret_leaves_its_server_out_and_the_rest_serving() {
    let servers = "[{port: {number: 443, name: https-a, protocol: HTTPS}, hosts: [a.example.com], \
                   tls: {mode: SIMPLE, credentialName: a}}, \
                   {port: {number: 443, name: https-b, protocol: HTTPS}, hosts: [b.example.com], \
                   tls: {mode: SIMPLE, credentialName: missing}}, \
                   {port: {number: 80, name: http, protocol: HTTP}, hosts: [c.example.com]}]";
    let res = translate_with(
        servers,
        &tls_secret("istio-system", "a", "CERT-A", None),
        &MeshConfig::default(),
    );
    let certs = certificates(&res);
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].secret, "kubernetes://istio-system/a");
    let notes = notes(&res);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "spec.servers[1].tls.credentialName");
    assert!(
        notes[0].1.contains("Secret istio-system/missing not found")
            && notes[0].1.contains("left out"),
        "{}",
        notes[0].1
    );
    // b.example.com is not served on 443 under a's certificate; port 80 still serves.
    let domains: Vec<(&str, &str)> = res
        .route_configs
        .iter()
        .flat_map(|rc| {
            rc.virtual_hosts
                .iter()
                .map(move |vh| (rc.name.as_str(), vh))
        })
        .flat_map(|(rc, vh)| vh.domains.iter().map(move |d| (rc, d.as_str())))
        .collect();
    assert_eq!(
        domains,
        [("http.80", "c.example.com"), ("http.443", "a.example.com")]
    );

    // The only server on its port: no listener there at all.
    let res = translate_with(
        "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
         tls: {mode: SIMPLE, credentialName: missing}}]",
        "",
        &MeshConfig::default(),
    );
    assert!(res.listeners.is_empty(), "{:?}", res.listeners);
    assert!(res.secrets.is_empty());
}

#[test]
fn mutual_takes_the_cacert_secret_else_the_credentials_own_ca() {
    let servers = "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
                   tls: {mode: MUTUAL, credentialName: a}}]";
    let ca_of = |res: &ProxyResources| match secret_pem(res, "kubernetes://istio-system/a-cacert") {
        Some(proto::secret::Type::ValidationContext(v)) => Some(v.trusted_ca),
        _ => None,
    };
    // The credential's own ca.crt.
    let own = translate_with(
        servers,
        &tls_secret("istio-system", "a", "CERT-A", Some("CA")),
        &MeshConfig::default(),
    );
    assert_eq!(ca_of(&own).as_deref(), Some("CA"));
    let v = certificates(&own)[0]
        .client_validation
        .clone()
        .expect("mutual");
    assert_eq!(v.ca_secret, "kubernetes://istio-system/a-cacert");
    assert_eq!((v.ca_file.as_str(), v.optional), ("", false));
    // A separate a-cacert Secret (Istio's) wins.
    let separate = translate_with(
        servers,
        &[
            tls_secret("istio-system", "a", "CERT-A", Some("CA")),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a-cacert, namespace: istio-system}\n\
             stringData: {ca.crt: CA2}\n---\n"
                .to_owned(),
        ]
        .concat(),
        &MeshConfig::default(),
    );
    assert_eq!(ca_of(&separate).as_deref(), Some("CA2"));
    // No CA anywhere: the server is left out (never served without checking clients).
    let none = translate_with(
        servers,
        &tls_secret("istio-system", "a", "CERT-A", None),
        &MeshConfig::default(),
    );
    assert!(none.listeners.is_empty() && none.secrets.is_empty());
    let notes = notes(&none);
    assert!(notes[0].1.contains("no client CA"), "{notes:?}");
}

#[test]
fn file_sources_are_explicit() {
    // `file://DIR`, whatever the mesh config says.
    let res = translate_with(
        "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
         tls: {mode: MUTUAL, credentialName: 'file:///etc/certs/a/'}}]",
        "",
        &MeshConfig::default(),
    );
    let c = &certificates(&res)[0];
    assert_eq!(
        (c.cert_file.as_str(), c.key_file.as_str(), c.secret.as_str()),
        ("/etc/certs/a/tls.crt", "/etc/certs/a/tls.key", "")
    );
    let v = c.client_validation.as_ref().expect("mutual");
    assert_eq!(
        (v.ca_file.as_str(), v.preferred_ca_file.as_str()),
        ("/etc/certs/a/ca.crt", "/etc/certs/a-cacert/ca.crt")
    );
    assert!(res.secrets.is_empty());
    // A Secret of the name wins over credentialDir.
    let mesh = MeshConfig {
        credential_dir: DIR.to_owned(),
        ..MeshConfig::default()
    };
    let res = translate_with(
        "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], \
         tls: {mode: SIMPLE, credentialName: a}}]",
        &tls_secret("istio-system", "a", "CERT-A", None),
        &mesh,
    );
    assert_eq!(certificates(&res)[0].secret, "kubernetes://istio-system/a");
}
