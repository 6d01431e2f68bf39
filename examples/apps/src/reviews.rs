//! bookinfo's reviews service: `GET /reviews/<id>` gives two reviews and the pod that served
//! them. With `ENABLE_RATINGS=true` (v2, v3) it asks ratings for stars and colours them
//! `STAR_COLOR`; when ratings fails it says so in each review instead.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Env;
use crate::client::Client;
use crate::propagate;
use crate::server::{Req, Resp, json, not_found};

/// What each review says when ratings did not answer.
pub(crate) const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

pub(crate) struct Reviews {
    ratings_enabled: bool,
    star_color: String,
    ratings_url: String,
    /// The original gives black-star reviews (v2) 10 s for ratings and the others (v3)
    /// 2.5 s; Istio's fault-injection and timeout tasks are written around these values.
    ratings_timeout: Duration,
    pod_name: String,
    cluster_name: String,
    client: Client,
}

impl Reviews {
    pub fn new(env: &Env) -> Reviews {
        let star_color = env.get("STAR_COLOR").unwrap_or("black").to_owned();
        let ratings_timeout = if star_color == "black" {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(2500)
        };
        Reviews {
            ratings_enabled: env
                .get("ENABLE_RATINGS")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            star_color,
            ratings_url: format!("{}/ratings", env.service_url("ratings")),
            ratings_timeout,
            pod_name: env.pod_name(),
            // The original prints an unset cluster name as "null"; productpage hides that.
            cluster_name: env.get("CLUSTER_NAME").unwrap_or("null").to_owned(),
            client: env.client(),
        }
    }

    pub async fn handle(&self, req: Req) -> Resp {
        if req.method != Method::GET {
            return not_found();
        }
        if req.path == "/health" {
            return json(StatusCode::OK, &json!({"status": "Reviews is healthy"}));
        }
        let Some(id) = req.path.strip_prefix("/reviews/") else {
            return not_found();
        };
        let Ok(id) = id.parse::<i64>() else {
            return json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "please provide numeric product id"}),
            );
        };
        let stars = if self.ratings_enabled {
            self.ratings(id, &req).await
        } else {
            None
        };
        let reviews: Vec<Value> = REVIEWS
            .iter()
            .map(|(reviewer, text)| {
                let mut review = json!({"reviewer": reviewer, "text": text});
                if self.ratings_enabled {
                    let rating = match stars.as_ref().and_then(|s| s.get(*reviewer)) {
                        Some(stars) => json!({"stars": stars, "color": self.star_color}),
                        None => json!({"error": RATINGS_UNAVAILABLE}),
                    };
                    review["rating"] = rating;
                }
                review
            })
            .collect();
        json(
            StatusCode::OK,
            &json!({
                "id": id.to_string(),
                "podname": self.pod_name,
                "clustername": self.cluster_name,
                "reviews": reviews,
            }),
        )
    }

    /// Each reviewer's stars from ratings, or `None` when ratings failed.
    async fn ratings(&self, id: i64, req: &Req) -> Option<serde_json::Map<String, Value>> {
        let url = format!("{}/{id}", self.ratings_url);
        let headers = propagate::forward(&req.headers, None);
        let reply = match self.client.get(&url, &headers, self.ratings_timeout).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "ratings unavailable");
                return None;
            }
        };
        if reply.status != StatusCode::OK {
            tracing::warn!(status = %reply.status, "ratings unavailable");
            return None;
        }
        let body: Value = serde_json::from_slice(&reply.body).ok()?;
        let ratings = body.get("ratings")?.as_object()?;
        Some(
            ratings
                .iter()
                .filter(|(_, v)| v.is_i64() || v.is_u64())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}
