//! bookinfo's ratings service: `GET /ratings/<id>` gives each reviewer's stars;
//! `POST /ratings/<id>` replaces them (kept in memory, as the original v1 does).

use std::collections::HashMap;
use std::sync::Mutex;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Env;
use crate::server::{Req, Resp, json, not_found};

pub(crate) struct Ratings {
    /// Ratings posted per product id; the rest get the built-in 5 and 4 stars.
    posted: Mutex<HashMap<i64, Value>>,
}

impl Ratings {
    pub fn new(_env: &Env) -> Ratings {
        Ratings {
            posted: Mutex::new(HashMap::new()),
        }
    }

    pub fn handle(&self, req: &Req) -> Resp {
        if req.method == Method::GET && req.path == "/health" {
            return json(StatusCode::OK, &json!({"status": "Ratings is healthy"}));
        }
        let Some(id) = req.path.strip_prefix("/ratings/") else {
            return not_found();
        };
        let Ok(id) = id.parse::<i64>() else {
            return json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "please provide numeric product ID"}),
            );
        };
        match req.method {
            Method::GET => json(StatusCode::OK, &self.ratings(id)),
            Method::POST => {
                let Ok(ratings) = serde_json::from_slice::<Value>(&req.body) else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "please provide valid ratings JSON"}),
                    );
                };
                if let Ok(mut posted) = self.posted.lock() {
                    posted.insert(id, ratings);
                }
                json(StatusCode::OK, &self.ratings(id))
            }
            _ => not_found(),
        }
    }

    fn ratings(&self, id: i64) -> Value {
        let posted = self
            .posted
            .lock()
            .ok()
            .and_then(|posted| posted.get(&id).cloned());
        let ratings = posted.unwrap_or_else(|| json!({"Reviewer1": 5, "Reviewer2": 4}));
        json!({"id": id, "ratings": ratings})
    }
}
