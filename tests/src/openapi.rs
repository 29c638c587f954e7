//! Checks real responses against the OpenAPI 3.1 description in
//! `functions/edge/openapi.json`: the operation must exist (or the answer must be an error
//! body), the status must be documented, and the body must match the documented schema.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

/// The loaded description.
#[derive(Debug)]
pub struct OpenApi {
    doc: Value,
}

impl OpenApi {
    pub fn load(path: &Path) -> anyhow::Result<OpenApi> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(OpenApi { doc: serde_json::from_str(&text).context("openapi.json is not JSON")? })
    }

    /// The path template (e.g. `/v1/jobs/{id}`) a concrete path falls under.
    fn template(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        // Prefer literal matches (`/v1/jobs/batch`) over templated ones (`/v1/jobs/{id}`).
        let mut best: Option<(usize, &String)> = None;
        for t in paths.keys() {
            let tsegs: Vec<&str> = t.split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let fits = tsegs.iter().zip(&segs).all(|(a, b)| {
                if a.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    a == b
                }
            });
            if fits && best.is_none_or(|(n, _)| literal > n) {
                best = Some((literal, t));
            }
        }
        best.map(|(_, t)| t.clone())
    }

    fn validate(&self, schema: &Value, body: &Value) -> Result<(), String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let v = jsonschema::validator_for(&root).map_err(|e| format!("bad schema in openapi.json: {e}"))?;
        let errors: Vec<String> = v.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Checks one response.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let error_schema = json!({ "$ref": "#/components/schemas/Error" });
        let Some(template) = self.template(path) else {
            // Not a documented path: it must be the 404 error body.
            return if status == 404 {
                self.validate(&error_schema, body)
            } else {
                Err(format!("{path} is undocumented"))
            };
        };
        let Some(op) = self.doc["paths"][&template].get(method.to_ascii_lowercase()) else {
            return if status == 405 {
                self.validate(&error_schema, body)
            } else {
                Err(format!("{method} {template} is undocumented but answered {status}"))
            };
        };
        let Some(resp) = op["responses"].get(status.to_string()) else {
            return Err(format!("{method} {template} answered {status}, which is not documented"));
        };
        if resp.pointer("/content/application~1json").is_none() && resp.pointer("/content/text~1plain").is_some() {
            return Ok(()); // a text body (the metrics exposition), checked by promtool instead
        }
        match resp.pointer("/content/application~1json/schema") {
            Some(schema) => self.validate(schema, body).map_err(|e| format!("{method} {template} {status}: {e}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> OpenApi {
        OpenApi::load(&crate::stack::StackOptions::default_root().join("functions/edge/openapi.json")).expect("loads")
    }

    #[test]
    fn matches_templates_and_rejects_wrong_bodies() {
        let api = api();
        assert_eq!(api.template("/v1/jobs/batch").as_deref(), Some("/v1/jobs/batch"));
        assert_eq!(api.template("/v1/jobs/j00").as_deref(), Some("/v1/jobs/{id}"));
        let err = json!({ "error": { "code": "job_not_found", "message": "no" } });
        assert!(api.check("GET", "/v1/jobs/j00", 404, &err).is_ok());
        assert!(api.check("GET", "/v1/jobs/j00", 404, &json!({ "oops": 1 })).is_err());
        assert!(api.check("GET", "/v1/jobs/j00", 418, &err).is_err(), "undocumented status");
        assert!(api.check("GET", "/nowhere", 404, &err).is_ok());
        assert!(
            api.check("DELETE", "/v1/jobs", 405, &json!({ "error": { "code": "method_not_allowed", "message": "x" } }))
                .is_ok()
        );
        let bad_code = json!({ "error": { "code": "made_up", "message": "x" } });
        assert!(api.check("GET", "/v1/jobs/j00", 404, &bad_code).is_err(), "codes are an enum");
    }
}
