//! The HTTP API's request and response types: what the edge Worker answers and what the
//! CLI and other clients read. Plain serde types, no logic.
