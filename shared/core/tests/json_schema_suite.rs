//! The official JSON-Schema-Test-Suite, draft 2020-12 (vendored in `tests/json-schema-suite`),
//! run through `types::Schema`, the wrapper job types validate payloads with (our validator,
//! `shared/core/src/schema.rs`). Every case of a group that compiles must pass; the groups
//! listed in `UNSUPPORTED` use what the validator does not support, and must be refused when
//! compiled (so the list, and the README's, stay true). Prints the pass count of every file:
//! `cargo test -p edgejobs-core --test json_schema_suite -- --nocapture`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use edgejobs_core::types::Schema;
use serde_json::Value;

const REMOTE: &str = "a $ref to another document (nothing is fetched)";
const ID: &str = "a $id below the root (another schema resource, with its own base URI and anchors)";
const UNEVALUATED: &str = "unevaluatedProperties / unevaluatedItems";
const DYNAMIC: &str = "$dynamicRef / $dynamicAnchor";
const UNICODE: &str = "a Unicode class (\\p{..}) in a pattern: regex-lite has none";

/// Groups (file, group description, or "*" for the whole file) that use what the validator
/// does not support, and why. Each must be refused at compile time: one that compiles fails
/// this test until it is removed from the list.
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    ("refRemote.json", "*", REMOTE),
    ("vocabulary.json", "*", "a custom meta-schema ($schema other than 2020-12's)"),
    ("dynamicRef.json", "*", DYNAMIC),
    ("unevaluatedItems.json", "*", UNEVALUATED),
    ("unevaluatedProperties.json", "*", UNEVALUATED),
    ("anchor.json", "Location-independent identifier with absolute URI", ID),
    ("anchor.json", "Location-independent identifier with base URI change in subschema", ID),
    ("anchor.json", "same $anchor with different base uri", ID),
    ("defs.json", "validate definition against metaschema", REMOTE),
    ("not.json", "collect annotations inside a 'not', even if collection is disabled", UNEVALUATED),
    ("pattern.json", "pattern with Unicode property escape requires unicode mode", UNICODE),
    ("patternProperties.json", "patternProperties with Unicode property escape", UNICODE),
    ("ref.json", "$id must be resolved against nearest parent, not just immediate parent", ID),
    ("ref.json", "Recursive references between schemas", ID),
    ("ref.json", "URN ref with nested pointer ref", ID),
    ("ref.json", "order of evaluation: $id and $anchor and $ref", ID),
    ("ref.json", "order of evaluation: $id and $ref", ID),
    ("ref.json", "order of evaluation: $id and $ref on nested schema", ID),
    ("ref.json", "ref creates new scope when adjacent to keywords", UNEVALUATED),
    ("ref.json", "ref to else", ID),
    ("ref.json", "ref to if", ID),
    ("ref.json", "ref to then", ID),
    ("ref.json", "ref with absolute-path-reference", ID),
    ("ref.json", "refs with relative uris and defs", ID),
    ("ref.json", "relative refs with absolute uris and defs", ID),
    ("ref.json", "remote ref, containing refs itself", REMOTE),
];

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/json-schema-suite/draft2020-12")
}

fn unsupported(file: &str, group: &str) -> bool {
    UNSUPPORTED.iter().any(|(f, g, _)| *f == file && (*g == "*" || *g == group))
}

#[test]
fn draft2020_12_cases_of_the_supported_keywords_pass() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", suite_dir().display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the vendored suite is missing: {files:?}");

    let mut failures = Vec::new();
    let mut listed_but_compiling = BTreeSet::new();
    let (mut total_pass, mut total, mut total_unsupported) = (0, 0, 0);
    for path in &files {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let groups: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (mut pass, mut cases, mut refused) = (0, 0, 0);
        for g in &groups {
            let desc = g["description"].as_str().unwrap_or_default();
            let tests = g["tests"].as_array().cloned().unwrap_or_default();
            cases += tests.len();
            let schema = match (Schema::compile(g["schema"].clone()), unsupported(&file, desc)) {
                (Err(_), true) => {
                    refused += tests.len();
                    continue;
                }
                (Ok(_), true) => {
                    listed_but_compiling.insert(format!("{file}: {desc}"));
                    continue;
                }
                (Err(e), false) => {
                    failures.push(format!("{file}: {desc}: schema refused: {e}"));
                    continue;
                }
                (Ok(schema), false) => schema,
            };
            for t in &tests {
                let expected = t["valid"].as_bool().unwrap_or_else(|| panic!("{file}: {desc}: no `valid`"));
                let violation = schema.first_violation(&t["data"]);
                if violation.is_none() == expected {
                    pass += 1;
                } else {
                    failures.push(format!("{file}: {desc}: {}: said {violation:?}", t["description"]));
                }
            }
        }
        println!(
            "{file:32} {pass:>3}/{cases:<3} passed{}",
            if refused > 0 { format!(" ({refused} unsupported, refused at compile time)") } else { String::new() }
        );
        total_pass += pass;
        total += cases;
        total_unsupported += refused;
    }
    println!("{:32} {total_pass:>3}/{total:<3} passed ({total_unsupported} unsupported)", "all of draft 2020-12");
    assert!(failures.is_empty(), "{} supported cases fail:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(total_pass + total_unsupported, total);
    assert!(
        listed_but_compiling.is_empty(),
        "listed as unsupported but compile, remove them: {listed_but_compiling:#?}"
    );
}

/// `pattern` and `patternProperties` run on `regex-lite`, whose matching is linear in the
/// input: a pattern it cannot run that way (backreferences, lookaround) is refused when the
/// type is declared, with an error naming it, rather than accepted and run by backtracking.
#[test]
fn patterns_that_need_backtracking_are_refused_at_declaration() {
    for pattern in [r"^(a)\1$", r"^(?=a)a$", r"^(?!b)a$", r"(?<=a)b"] {
        let e = Schema::compile(serde_json::json!({ "type": "string", "pattern": pattern }))
            .err()
            .unwrap_or_else(|| panic!("{pattern} was accepted"));
        assert!(e.contains("regex") || e.contains("pattern"), "{pattern}: {e}");
        let e = Schema::compile(serde_json::json!({ "patternProperties": { pattern: true } }))
            .err()
            .unwrap_or_else(|| panic!("{pattern} was accepted as a property pattern"));
        assert!(e.contains("regex") || e.contains("pattern"), "{pattern}: {e}");
    }
    // The classic catastrophic pattern compiles and answers; no timing is asserted here, the
    // engine's guarantee is the refusal above.
    let s = Schema::compile(serde_json::json!({ "pattern": "^(a+)+$" })).unwrap_or_else(|e| panic!("{e}"));
    let evil = format!("{}!", "a".repeat(4096));
    assert!(s.first_violation(&Value::String(evil)).is_some());
    assert!(s.first_violation(&Value::String("a".repeat(4096))).is_none());
}
