//! The DNS resolver: resolves the names the registry's DNS ServiceEntries use
//! ([`crate::dns::names`]) when they first appear and every `dnsRefreshRate` after, and
//! publishes the table the push reads. A name that fails keeps its previous answer (as
//! Envoy's STRICT_DNS keeps its hosts when a refresh fails); one that never resolved is noted
//! by translation and has no endpoints.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::store::ConfigSnapshot;
use crate::dns::{self, DnsTable};
use crate::mesh_config::MeshConfig;
use crate::registry::Registry;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves until `tx` has no receivers left or the inputs' senders are gone.
pub async fn resolve_loop(
    mut config: watch::Receiver<Arc<ConfigSnapshot>>,
    mut mesh: watch::Receiver<Arc<MeshConfig>>,
    tx: watch::Sender<Arc<DnsTable>>,
) {
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut next_refresh = tokio::time::Instant::now();
    loop {
        let snapshot = config.borrow_and_update().clone();
        let refresh = mesh.borrow_and_update().dns_refresh_rate();
        let names = tokio::task::spawn_blocking(move || {
            dns::names(&Registry::build(&snapshot.resources, Vec::new()))
        })
        .await
        .unwrap_or_default();
        let now = tokio::time::Instant::now();
        if names != known || now >= next_refresh {
            let previous = tx.borrow().clone();
            let table = resolve_all(&names, &previous).await;
            tx.send_if_modified(|current| {
                if **current == table {
                    return false;
                }
                *current = Arc::new(table);
                true
            });
            known = names;
            next_refresh = tokio::time::Instant::now() + refresh;
        }
        tokio::select! {
            r = config.changed() => if r.is_err() { return },
            r = mesh.changed() => if r.is_err() { return },
            () = tokio::time::sleep_until(next_refresh) => {}
            () = tx.closed() => return,
        }
    }
}

/// Looks every name up at once. Addresses are sorted, so a server that rotates its answers
/// does not make every refresh a change.
async fn resolve_all(names: &BTreeSet<String>, previous: &DnsTable) -> DnsTable {
    let mut lookups = JoinSet::new();
    for name in names {
        let name = name.clone();
        lookups.spawn(async move {
            let answer = lookup(&name).await;
            (name, answer)
        });
    }
    let mut table = DnsTable::default();
    while let Some(done) = lookups.join_next().await {
        let Ok((name, answer)) = done else { continue };
        let answer = match (answer, previous.get(&name)) {
            (Ok(ips), _) => Ok(ips),
            (Err(e), Some(Ok(before))) => {
                tracing::warn!(name, "DNS refresh failed, keeping the previous answer: {e}");
                Ok(before.clone())
            }
            (Err(e), _) => {
                tracing::warn!(name, "DNS lookup failed: {e}");
                Err(e)
            }
        };
        table.insert(name, answer);
    }
    table
}

async fn lookup(name: &str) -> Result<Vec<IpAddr>, String> {
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| format!("no answer within {LOOKUP_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let ips: BTreeSet<IpAddr> = found.map(|a| a.ip()).collect();
    if ips.is_empty() {
        return Err("no address".into());
    }
    Ok(ips.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> Arc<ConfigSnapshot> {
        Arc::new(ConfigSnapshot {
            generation: 1,
            resources: weft_api::load_str("t.yaml", yaml).resources,
            errors: Vec::new(),
        })
    }

    #[tokio::test]
    async fn names_are_resolved_when_they_appear() {
        let entry = |endpoint: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e}}\n\
                 spec:\n  hosts: [e.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
                 resolution: DNS\n  endpoints: [{{address: {endpoint}}}]\n"
            )
        };
        let (config_tx, config) = watch::channel(snapshot(&entry("localhost")));
        let (_mesh_tx, mesh) = watch::channel(Arc::new(MeshConfig::default()));
        let (tx, mut rx) = watch::channel(Arc::new(DnsTable::default()));
        let task = tokio::spawn(resolve_loop(config, mesh, tx));

        rx.changed().await.expect("a table");
        let table = rx.borrow_and_update().clone();
        let ips = match table.get("localhost") {
            Some(Ok(ips)) => ips.clone(),
            other => panic!("localhost: {other:?}"),
        };
        assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");

        // A new name is looked up at once (well before the 60 s refresh); a failure is
        // recorded with its reason.
        config_tx
            .send(snapshot(&entry("no-such-host.invalid")))
            .expect("sent");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("in time")
            .expect("a table");
        let table = rx.borrow_and_update().clone();
        assert!(table.get("localhost").is_none());
        assert!(
            matches!(table.get("no-such-host.invalid"), Some(Err(_))),
            "{table:?}"
        );
        task.abort();
    }
}
