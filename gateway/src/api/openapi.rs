//! The OpenAPI description of the native API: `docs/openapi.yaml`, compiled in and served at
//! [`PATH`].
//!
//! The document is written by hand and checked in; the binary serves exactly those bytes. The
//! tests compare [`documented_operations`] with the router's route list
//! ([`super::native::ROUTES`]) so that a route cannot be added without its description.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Where the document is served.
pub const PATH: &str = "/openapi.yaml";

/// The checked-in document.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// `GET /openapi.yaml`.
pub async fn serve_yaml() -> Response {
    let mut response = OPENAPI_YAML.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    response
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The `(METHOD, path)` pairs under `paths:` of an OpenAPI YAML document written in the
/// layout of ours (two-space indentation: paths at 2, methods at 4). A small reader rather
/// than a YAML dependency: it only has to understand our own file.
pub fn documented_operations(doc: &str) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in doc.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            in_paths = text == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if indent == 2 {
            path = text
                .strip_suffix(':')
                .map(|p| p.trim_matches(|c| c == '"' || c == '\'').to_owned());
        } else if indent == 4 {
            if let (Some(p), Some(m)) = (&path, text.strip_suffix(':')) {
                if METHODS.contains(&m) {
                    ops.push((m.to_ascii_uppercase(), p.clone()));
                }
            }
        }
    }
    ops
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::native::ROUTES;

    #[test]
    fn the_reader_finds_paths_and_methods_only_under_paths() {
        let doc = "openapi: 3.1.0\ninfo:\n  get:\n    x: 1\npaths:\n  /a:\n    get:\n      summary: x\n    parameters:\n      - x\n  \"/b/{id}\":\n    post:\n      y: 2\ncomponents:\n  /c:\n    get:\n";
        assert_eq!(
            documented_operations(doc),
            vec![
                ("GET".to_owned(), "/a".to_owned()),
                ("POST".to_owned(), "/b/{id}".to_owned())
            ]
        );
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let mut documented = documented_operations(OPENAPI_YAML);
        documented.sort();
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
