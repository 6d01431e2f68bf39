//! bookinfo's details service: `GET /details/<id>` answers the book's publishing details
//! with the same JSON fields as the original.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::server::{Req, Resp, json, not_found};

pub(crate) fn handle(req: &Req) -> Resp {
    if req.method != Method::GET {
        return not_found();
    }
    if req.path == "/health" {
        return json(StatusCode::OK, &json!({"status": "Details is healthy"}));
    }
    let Some(id) = req.path.strip_prefix("/details/") else {
        return not_found();
    };
    match id.parse::<i64>() {
        Ok(id) => json(StatusCode::OK, &book_details(id)),
        Err(_) => json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "please provide numeric product id"}),
        ),
    }
}

fn book_details(id: i64) -> serde_json::Value {
    json!({
        "id": id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}
