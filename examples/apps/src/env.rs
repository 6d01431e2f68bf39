//! The environment an app is configured from, as a value so tests can build one without
//! touching the process environment.

use crate::client::Client;
use std::collections::HashMap;

/// Environment variables, read once at start-up.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value of `name`; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The instance name: `POD_NAME`, else `HOSTNAME`, as Kubernetes sets them.
    pub fn pod_name(&self) -> String {
        self.get("POD_NAME")
            .or_else(|| self.get("HOSTNAME"))
            .unwrap_or("unknown")
            .to_owned()
    }

    /// The HTTP client outbound calls use: through `HTTP_PROXY`/`http_proxy` when set.
    pub fn client(&self) -> Client {
        Client::new(self.get("HTTP_PROXY").or_else(|| self.get("http_proxy")))
    }

    /// The base URL of a bookinfo service, built as the original builds it:
    /// `http://<NAME_HOSTNAME or name><.SERVICES_DOMAIN>:<NAME_SERVICE_PORT or 9080>`.
    pub fn service_url(&self, name: &str) -> String {
        let upper = name.to_ascii_uppercase();
        let host = self
            .get(&format!("{upper}_HOSTNAME"))
            .unwrap_or(name)
            .to_owned();
        let domain = self
            .get("SERVICES_DOMAIN")
            .map(|d| format!(".{d}"))
            .unwrap_or_default();
        let port = self.get(&format!("{upper}_SERVICE_PORT")).unwrap_or("9080");
        format!("http://{host}{domain}:{port}")
    }
}
