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
/// ingress gateway.
fn translate(servers: &str) -> ProxyResources {
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: front}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: {servers}\n"
    );
    let loaded = weft_api::load_str("test.yaml", &format!("{gateway}---\n{VIRTUAL_SERVICE}"));
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let view = ConfigView::new(loaded.resources, Vec::new());
    let mut node =
        ProxyNode::parse_id("router~10.0.0.5~gw-0.front~front.svc.cluster.local").expect("id");
    node.labels
        .insert("istio".to_owned(), "ingressgateway".to_owned());
    crate::translate(&node, &MeshConfig::default(), &view)
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
        crl_file: String::new(),
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
    assert_eq!(server_kind(r, &server, "spec.servers[1]", &mut notes), None);
    let notes = notes.finish();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].reason.contains("no client CA"),
        "{}",
        notes[0].reason
    );
}
