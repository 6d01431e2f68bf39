use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A CA for tests: signs what it is asked, for `ttl`.
pub(crate) struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root_pem: String,
    ttl: Duration,
    pub calls: AtomicUsize,
}

impl TestCa {
    pub(crate) fn new(ttl: Duration) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let root = params.self_signed(&key).unwrap();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            root_pem: root.pem(),
            ttl,
            calls: AtomicUsize::new(0),
        }
    }

    pub(crate) fn sign(&self, spiffe_id: &str) -> Issued {
        let (csr, key) = csr_for(spiffe_id).unwrap();
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let now = SystemTime::now();
        csr.params.not_before = now.into();
        csr.params.not_after = (now + self.ttl).into();
        let leaf = csr.signed_by(&self.issuer).unwrap();
        Issued::from_chain(vec![leaf.pem(), self.root_pem.clone()], key).unwrap()
    }
}

impl CertSource for Arc<TestCa> {
    async fn issue(&self, spiffe_id: &str) -> Result<Issued, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.sign(spiffe_id))
    }
}

const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

#[test]
fn renewal_is_at_half_the_lifetime_less_up_to_five_percent() {
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(renew_delay(day, 0.0), day / 2);
    assert_eq!(renew_delay(day, 1.0), day.mul_f64(0.45));
    let d = renew_delay(day, 0.5);
    assert!(d < day / 2 && d > day.mul_f64(0.45));
}

#[test]
fn an_issued_certificate_is_read_for_inspection_and_peers() {
    let ca = TestCa::new(Duration::from_secs(3600));
    let issued = ca.sign(ID);
    assert_eq!(issued.sans, [format!("URI:{ID}")]);
    assert_eq!(issued.lifetime(), Duration::from_secs(3600));
    assert_eq!(issued.root_fingerprints.len(), 1);
    assert_eq!(issued.root_fingerprints[0].len(), 64);
    let leaf = &issued.certified.cert[0];
    assert_eq!(
        principal_of(leaf).as_deref(),
        Some("cluster.local/ns/default/sa/reviews")
    );
    // A chain with only roots, or nothing, is refused.
    let (_, key) = csr_for(ID).unwrap();
    assert!(Issued::from_chain(vec![ca.root_pem.clone()], key.clone_key()).is_err());
    assert!(Issued::from_chain(Vec::new(), key).is_err());
}

#[tokio::test(start_paused = true)]
async fn certificates_are_renewed_at_half_their_lifetime() {
    let ca = Arc::new(TestCa::new(Duration::from_secs(100)));
    let identity = Arc::new(Identity::new(ID.to_owned()));
    let mut ready = identity.ready();
    let task = tokio::spawn(run(identity.clone(), ca.clone()));
    ready.wait_for(|r| *r).await.unwrap();
    assert_eq!(ca.calls.load(Ordering::SeqCst), 1);
    let first = identity.current().unwrap().serial.clone();
    // Not before 45% of the lifetime...
    tokio::time::sleep(Duration::from_secs(44)).await;
    assert_eq!(ca.calls.load(Ordering::SeqCst), 1);
    // ...and by 50%.
    tokio::time::sleep(Duration::from_millis(6_100)).await;
    assert_eq!(ca.calls.load(Ordering::SeqCst), 2);
    assert_ne!(
        identity.current().unwrap().serial,
        first,
        "a new certificate"
    );
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(ca.calls.load(Ordering::SeqCst), 3);
    task.abort();
}

/// Fails `failures` times, then signs.
struct Flaky {
    ca: TestCa,
    failures: AtomicUsize,
}

impl CertSource for Arc<Flaky> {
    async fn issue(&self, spiffe_id: &str) -> Result<Issued, String> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("CA not reachable".to_owned());
        }
        Ok(self.ca.sign(spiffe_id))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_request_is_retried_with_backoff() {
    let flaky = Arc::new(Flaky {
        ca: TestCa::new(Duration::from_secs(3600)),
        failures: AtomicUsize::new(3),
    });
    let identity = Arc::new(Identity::new(ID.to_owned()));
    let task = tokio::spawn(run(identity.clone(), flaky.clone()));
    // 200 ms + 400 ms + 800 ms of backoff, then the fourth try succeeds.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(identity.current().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(identity.current().is_some());
    task.abort();
}
