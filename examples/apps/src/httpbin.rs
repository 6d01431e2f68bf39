//! An httpbin-like echo service for Istio's traffic tasks (circuit breaking, mirroring):
//! `/get`, `/headers`, `/ip`, `/user-agent`, `/status/<code>`, `/delay/<seconds>` and
//! `/anything`, answering JSON shaped like httpbin.org's.

use std::time::Duration;

use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::Env;
use crate::server::{Req, Resp, form_pairs, json, not_found, text};

/// The longest `/delay/<s>` waits, as httpbin caps it.
const MAX_DELAY: Duration = Duration::from_secs(10);

pub(crate) struct Httpbin {
    pod_name: String,
}

impl Httpbin {
    pub fn new(env: &Env) -> Httpbin {
        Httpbin {
            pod_name: env.pod_name(),
        }
    }

    pub async fn handle(&self, req: Req) -> Resp {
        let path = req.path.clone();
        let mut response = self.route(&req, &path).await;
        // Which instance answered: the mirroring and load-balancing tasks look at this.
        if let Ok(pod) = hyper::header::HeaderValue::from_str(&self.pod_name) {
            response.headers_mut().insert("x-httpbin-pod", pod);
        }
        response
    }

    async fn route(&self, req: &Req, path: &str) -> Resp {
        match path {
            "/" | "/health" => text(StatusCode::OK, "httpbin is healthy\n"),
            "/get" if req.method == Method::GET || req.method == Method::HEAD => {
                json(StatusCode::OK, &Value::Object(self.echo(req, false)))
            }
            "/headers" => json(
                StatusCode::OK,
                &json!({"headers": headers_json(&req.headers)}),
            ),
            "/ip" => json(
                StatusCode::OK,
                &json!({"origin": req.peer.ip().to_string()}),
            ),
            "/user-agent" => json(
                StatusCode::OK,
                &json!({"user-agent": req.header("user-agent").unwrap_or("")}),
            ),
            _ if path == "/anything" || path.starts_with("/anything/") => {
                json(StatusCode::OK, &Value::Object(self.echo(req, true)))
            }
            _ => {
                if let Some(code) = path.strip_prefix("/status/") {
                    return status(code);
                }
                if let Some(seconds) = path.strip_prefix("/delay/") {
                    let Some(delay) = seconds
                        .parse::<f64>()
                        .ok()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    else {
                        return text(StatusCode::BAD_REQUEST, "bad delay\n");
                    };
                    tokio::time::sleep(delay.min(MAX_DELAY)).await;
                    return json(StatusCode::OK, &Value::Object(self.echo(req, false)));
                }
                not_found()
            }
        }
    }

    /// The request as httpbin describes it: args, headers, origin, url, and for `/anything`
    /// the method and body too.
    fn echo(&self, req: &Req, with_body: bool) -> Map<String, Value> {
        let mut args = Map::new();
        for (k, v) in form_pairs(req.query.as_deref().unwrap_or("")) {
            args.insert(k, Value::String(v));
        }
        let host = req.header("host").unwrap_or("localhost");
        let url = match &req.query {
            Some(q) => format!("http://{host}{}?{q}", req.path),
            None => format!("http://{host}{}", req.path),
        };
        let mut out = Map::new();
        out.insert("args".into(), Value::Object(args));
        out.insert("headers".into(), headers_json(&req.headers));
        out.insert("origin".into(), Value::String(req.peer.ip().to_string()));
        out.insert("url".into(), Value::String(url));
        if with_body {
            out.insert("method".into(), Value::String(req.method.to_string()));
            let body = String::from_utf8_lossy(&req.body).into_owned();
            let form = req
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
            let mut form_map = Map::new();
            if form {
                for (k, v) in form_pairs(&body) {
                    form_map.insert(k, Value::String(v));
                }
            }
            let parsed = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
            out.insert("data".into(), Value::String(body));
            out.insert("form".into(), Value::Object(form_map));
            out.insert("json".into(), parsed);
        }
        out
    }
}

/// `/status/<code>`: answers that code; `/status/200,503` picks one of the listed codes.
fn status(codes: &str) -> Resp {
    let codes: Vec<&str> = codes.split(',').collect();
    let pick = codes
        .get(pseudo_random() % codes.len().max(1))
        .copied()
        .unwrap_or("");
    match pick
        .trim()
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(code) if code.as_u16() >= 200 => text(code, ""),
        _ => text(StatusCode::BAD_REQUEST, "invalid status code\n"),
    }
}

/// A cheap varying index (no RNG crate needed for picking among a few codes).
fn pseudo_random() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize / 1000)
        .unwrap_or(0)
}

/// Headers as a JSON object with httpbin's Title-Case names; repeated headers joined by `,`.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        out.insert(title_case(name.as_str()), Value::String(values.join(",")));
    }
    Value::Object(out)
}

fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status("418").status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(status("503").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("abc").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("99").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("").status(), StatusCode::BAD_REQUEST);
        let picked = status("200,201").status();
        assert!(picked == StatusCode::OK || picked == StatusCode::CREATED);
    }

    #[test]
    fn title_cases_header_names() {
        assert_eq!(title_case("x-b3-traceid"), "X-B3-Traceid");
        assert_eq!(title_case("user-agent"), "User-Agent");
    }
}
