//! bookinfo's productpage: the HTML page users and Istio's docs look at, and the JSON API
//! behind it. It calls details and reviews with the original's timeouts (3 s each, reviews
//! tried twice: Istio's fault-injection task depends on that 6 s budget), names the
//! signed-in user downstream with `end-user`, and copies the trace headers along.

use std::fmt::Write as _;
use std::time::Duration;

use hyper::header::{COOKIE, HeaderValue, LOCATION, REFERER, SET_COOKIE};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Env;
use crate::client::Client;
use crate::propagate;
use crate::server::{Req, Resp, form_pairs, html_escape, json, not_found, reply, text};

pub(crate) const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
const DETAILS_UNAVAILABLE: &str = "Sorry, product details are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Sorry, product ratings are currently unavailable for this book.";

/// The timeout of each call productpage makes, as in the original.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times reviews is tried: the original's deliberate retry, which Istio's
/// fault-injection task explains (2 x 3 s = 6 s < the 7 s delay injected for jason).
const REVIEWS_ATTEMPTS: usize = 2;

/// The session cookie holding the signed-in user's name.
const SESSION_COOKIE: &str = "session";

const TITLE: &str = "The Comedy of Errors";
const DESCRIPTION_HTML: &str = "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

pub(crate) struct Productpage {
    details_url: String,
    reviews_url: String,
    ratings_url: String,
    client: Client,
}

/// A downstream answer: its status and JSON body, or the error body the page shows.
struct Fetched {
    status: StatusCode,
    body: Value,
}

impl Productpage {
    pub fn new(env: &Env) -> Productpage {
        Productpage {
            details_url: format!("{}/details", env.service_url("details")),
            reviews_url: format!("{}/reviews", env.service_url("reviews")),
            ratings_url: format!("{}/ratings", env.service_url("ratings")),
            client: env.client(),
        }
    }

    pub async fn handle(&self, req: Req) -> Resp {
        let path = req.path.as_str();
        match (&req.method, path) {
            (&Method::GET, "/" | "/index.html") => index(),
            (&Method::GET, "/health") => text(StatusCode::OK, "Product page is healthy"),
            (&Method::GET, "/productpage") => self.product_page(&req).await,
            (&Method::POST, "/login") => login(&req),
            (&Method::GET, "/logout") => logout(&req),
            (&Method::GET, "/api/v1/products") => json(
                StatusCode::OK,
                &json!([{"id": 0, "title": TITLE, "descriptionHtml": DESCRIPTION_HTML}]),
            ),
            (&Method::GET, _) => match path.strip_prefix("/api/v1/products/") {
                Some(rest) => self.api(&req, rest).await,
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    async fn api(&self, req: &Req, rest: &str) -> Resp {
        let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
        if id.is_empty() || id.contains(['?', '#']) {
            return not_found();
        }
        let headers = forward_headers(req);
        let fetched = match what {
            "" => self.details(id, &headers).await,
            "reviews" => self.reviews(id, &headers).await,
            "ratings" => self.ratings(id, &headers).await,
            _ => return not_found(),
        };
        json(fetched.status, &fetched.body)
    }

    async fn product_page(&self, req: &Req) -> Resp {
        let headers = forward_headers(req);
        let user = session_user(req);
        // Details first, then reviews, as the original does: the page's latency is the sum.
        let details = self.details("0", &headers).await;
        let reviews = self.reviews("0", &headers).await;
        let page = render_page(user.as_deref(), &details, &reviews);
        reply(StatusCode::OK, "text/html; charset=utf-8", page)
    }

    async fn details(&self, id: &str, headers: &hyper::HeaderMap) -> Fetched {
        let url = format!("{}/{id}", self.details_url);
        self.fetch(&url, headers, 1, DETAILS_UNAVAILABLE).await
    }

    async fn reviews(&self, id: &str, headers: &hyper::HeaderMap) -> Fetched {
        let url = format!("{}/{id}", self.reviews_url);
        self.fetch(&url, headers, REVIEWS_ATTEMPTS, REVIEWS_UNAVAILABLE)
            .await
    }

    async fn ratings(&self, id: &str, headers: &hyper::HeaderMap) -> Fetched {
        let url = format!("{}/{id}", self.ratings_url);
        self.fetch(&url, headers, 1, RATINGS_UNAVAILABLE).await
    }

    /// GETs `url` up to `attempts` times, each within [`CALL_TIMEOUT`]. On failure the status
    /// is the last one received (500 when none was) and the body `{"error": unavailable}`.
    async fn fetch(
        &self,
        url: &str,
        headers: &hyper::HeaderMap,
        attempts: usize,
        unavailable: &str,
    ) -> Fetched {
        let mut status = StatusCode::INTERNAL_SERVER_ERROR;
        for _ in 0..attempts {
            match self.client.get(url, headers, CALL_TIMEOUT).await {
                Ok(reply) if reply.status == StatusCode::OK => {
                    match serde_json::from_slice::<Value>(&reply.body) {
                        Ok(body) => {
                            return Fetched {
                                status: StatusCode::OK,
                                body,
                            };
                        }
                        Err(e) => {
                            tracing::warn!(url, error = %e, "unreadable JSON");
                            status = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                    }
                }
                Ok(reply) => {
                    tracing::warn!(url, status = %reply.status, "call failed");
                    status = reply.status;
                }
                Err(e) => {
                    tracing::warn!(url, error = %e, "call failed");
                    status = StatusCode::INTERNAL_SERVER_ERROR;
                }
            }
        }
        Fetched {
            status,
            body: json!({"error": unavailable}),
        }
    }
}

/// The trace headers of `req`, with `end-user` naming the signed-in user (or nobody).
fn forward_headers(req: &Req) -> hyper::HeaderMap {
    let user = session_user(req);
    propagate::forward(&req.headers, Some(user.as_deref()))
}

/// The user named by the session cookie, if any.
fn session_user(req: &Req) -> Option<String> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| crate::server::percent_decode(value))
        .filter(|user| !user.is_empty())
}

/// `POST /login` with form field `username`: remembers the user in the session cookie and
/// goes back to the page the form was on.
fn login(req: &Req) -> Resp {
    let form = std::str::from_utf8(&req.body).unwrap_or("");
    let user = form_pairs(form)
        .into_iter()
        .chain(form_pairs(req.query.as_deref().unwrap_or("")))
        .find(|(k, _)| k == "username")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let cookie = if user.is_empty() {
        clear_cookie()
    } else {
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
            cookie_encode(&user)
        )
    };
    redirect_back(req, &cookie)
}

/// `GET /logout`: forgets the user.
fn logout(req: &Req) -> Resp {
    redirect_back(req, &clear_cookie())
}

fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Max-Age=0")
}

fn redirect_back(req: &Req, cookie: &str) -> Resp {
    let mut response = text(StatusCode::FOUND, "");
    let location = req
        .headers
        .get(REFERER)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("/productpage"));
    response.headers_mut().insert(LOCATION, location);
    if let Ok(cookie) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

/// Percent-encodes everything but ASCII letters, digits and `-._~`, so any name fits in a
/// cookie value.
fn cookie_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:0;color:#222}\
nav{background:#1f2937;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}\
nav a{color:#ccc}main{padding:0 24px;max-width:960px}\
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:6px 10px;text-align:left}\
th{background:#466bb0;color:#fff}.reviews{display:flex;gap:24px;flex-wrap:wrap;background:#f3f6fb;padding:16px}\
.review{max-width:420px}.error{color:#dc2626}.served{font-family:monospace;color:#555}\
.stars{font-size:20px}";

fn index() -> Resp {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Simple Bookstore App</title>\
<style>{STYLE}</style></head><body><nav><span>BookInfo Sample</span></nav><main>\
<h2>Hello! This is a simple bookstore application consisting of four services.</h2>\
<table><thead><tr><th>service</th><th>calls</th></tr></thead><tbody>\
<tr><td>productpage</td><td>details, reviews</td></tr><tr><td>reviews</td><td>ratings</td></tr>\
</tbody></table><p><a href=\"productpage?u=normal\">Normal user</a></p>\
<p><a href=\"productpage?u=test\">Test user</a></p></main></body></html>\n"
    );
    reply(StatusCode::OK, "text/html; charset=utf-8", page)
}

fn render_page(user: Option<&str>, details: &Fetched, reviews: &Fetched) -> String {
    let mut page = String::with_capacity(8 << 10);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Simple Bookstore App</title><style>{STYLE}</style></head><body>\n<nav><span>BookInfo Sample</span>"
    );
    match user {
        Some(user) => {
            let _ = write!(
                page,
                "<span>{} <a href=\"logout\">Sign out</a></span>",
                html_escape(user)
            );
        }
        None => page.push_str(
            "<form method=\"post\" action=\"login\" name=\"login_form\">\
<input name=\"username\" placeholder=\"Username\" required> \
<input name=\"passwd\" type=\"password\" placeholder=\"Password\"> \
<button type=\"submit\">Sign in</button></form>",
        ),
    }
    let _ = write!(
        page,
        "</nav>\n<main><h1>{TITLE}</h1><p>{DESCRIPTION_HTML}</p>\n"
    );
    render_details(&mut page, details);
    page.push_str("</main>\n");
    render_reviews(&mut page, reviews);
    page.push_str("</body></html>\n");
    page
}

fn field(body: &Value, name: &str) -> String {
    match body.get(name) {
        Some(Value::String(s)) => html_escape(s),
        Some(Value::Null) | None => String::new(),
        Some(other) => html_escape(&other.to_string()),
    }
}

fn render_details(page: &mut String, details: &Fetched) {
    if details.status == StatusCode::OK {
        page.push_str(
            "<h4>Book Details</h4><table><thead><tr><th>ISBN-10</th><th>Publisher</th>\
<th>Pages</th><th>Type</th><th>Language</th></tr></thead><tbody><tr>",
        );
        for name in ["ISBN-10", "publisher", "pages", "type", "language"] {
            let _ = write!(page, "<td>{}</td>", field(&details.body, name));
        }
        page.push_str("</tr></tbody></table>\n");
    } else {
        let _ = writeln!(
            page,
            "<p class=\"error\">Error fetching product details</p><p>{}</p>",
            field(&details.body, "error")
        );
    }
}

fn render_reviews(page: &mut String, reviews: &Fetched) {
    page.push_str("<section class=\"reviews\">");
    if reviews.status != StatusCode::OK {
        let _ = writeln!(
            page,
            "<div><p class=\"error\">Error fetching product reviews</p><p>{}</p></div></section>",
            field(&reviews.body, "error")
        );
        return;
    }
    page.push_str("<h4 style=\"width:100%\">Book Reviews</h4>");
    let podname = field(&reviews.body, "podname");
    let cluster = match reviews.body.get("clustername").and_then(Value::as_str) {
        Some(c) if c != "null" && !c.is_empty() => format!(" on cluster {}", html_escape(c)),
        _ => String::new(),
    };
    let empty = Vec::new();
    let list = reviews
        .body
        .get("reviews")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for review in list {
        page.push_str("<div class=\"review\">");
        if let Some(rating) = review.get("rating") {
            if let Some(stars) = rating.get("stars").and_then(Value::as_u64) {
                let stars = stars.min(5) as usize;
                let color = rating
                    .get("color")
                    .and_then(Value::as_str)
                    .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '#'))
                    .unwrap_or("black");
                let _ = write!(
                    page,
                    "<div class=\"stars\" style=\"color:{color}\" title=\"{stars} stars\">{}{}</div>",
                    "&#9733;".repeat(stars),
                    "&#9734;".repeat(5 - stars)
                );
            } else if rating.get("error").is_some() {
                let _ = write!(page, "<p class=\"error\">{}</p>", field(rating, "error"));
            }
        }
        let _ = write!(
            page,
            "<blockquote><p>\"{}\"</p></blockquote><div><b>{}</b></div>\
<div class=\"served\">Reviews served by: {podname}{cluster}</div></div>",
            field(review, "text"),
            field(review, "reviewer"),
        );
    }
    page.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_round_trips_any_name() {
        for user in ["jason", "a b;c=d", "ünï", "%41"] {
            let cookie = format!("other=1; {SESSION_COOKIE}={}", cookie_encode(user));
            let mut headers = hyper::HeaderMap::new();
            headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
            let req = Req {
                method: Method::GET,
                path: "/productpage".to_owned(),
                query: None,
                version: hyper::Version::HTTP_11,
                headers,
                body: bytes::Bytes::new(),
                peer: ([127, 0, 0, 1], 1).into(),
            };
            assert_eq!(session_user(&req).as_deref(), Some(user));
        }
    }
}
