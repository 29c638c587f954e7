//! Dependencies point one way. Between the workspace's crates: this test reads the allowed
//! ones from the table in ARCHITECTURE.md's "Dependencies" section and holds
//! `cargo metadata --no-deps` to it. Inside the edge Worker: it reads the section's numbered
//! list of module layers and holds every `crate::` path of `functions/edge/src` to it. So
//! the doc and the code cannot drift. It runs offline and starts no stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// crate → the workspace crates it may depend on.
type Table = BTreeMap<String, BTreeSet<String>>;

/// One dependency of a workspace crate on another: (from, to, kind).
type Edge = (String, String, String);

const SECTION: &str = "## Dependencies";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The table of the "Dependencies" section: rows `` | `crate` | `a`, `b` | `` (or `—`).
fn parse_table(doc: &str) -> Result<Table, String> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != SECTION);
    if lines.next().is_none() {
        return Err(format!("ARCHITECTURE.md has no '{SECTION}' section"));
    }
    let rows = lines
        .take_while(|l| !l.starts_with("## "))
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // header and separator
    let names = |cell: &str| -> BTreeSet<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    let mut table = Table::new();
    for row in rows {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
        let [krate, deps] = cells[..] else { return Err(format!("a row of two cells expected: {row}")) };
        let from = names(krate).into_iter().next().ok_or_else(|| format!("no crate in row: {row}"))?;
        if table.insert(from.clone(), names(deps)).is_some() {
            return Err(format!("{from} has two rows"));
        }
    }
    if table.is_empty() {
        return Err(format!("the '{SECTION}' section has no table"));
    }
    Ok(table)
}

/// Every problem of `edges` (and of the workspace's `crates`) against `table`; empty when
/// all is allowed.
fn check(table: &Table, crates: &BTreeSet<String>, edges: &[Edge]) -> Vec<String> {
    let mut problems = Vec::new();
    for c in crates.iter().filter(|c| !table.contains_key(*c)) {
        problems.push(format!("{c} has no row in the table"));
    }
    for c in table.keys().filter(|c| !crates.contains(*c)) {
        problems.push(format!("the table names {c}, which is not a workspace crate"));
    }
    for (from, to, kind) in edges {
        if !table.get(from).is_some_and(|allowed| allowed.contains(to)) {
            problems.push(format!("{from} depends on {to} ({kind}), which the table does not allow"));
        }
    }
    if let Some(cycle) = find_cycle(table) {
        problems.push(format!("the table has a loop: {}", cycle.join(" → ")));
    }
    problems
}

/// A loop in the table's allowed edges, if any (depth-first search).
fn find_cycle(table: &Table) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        table: &'a Table,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            return Some(path[i..].iter().chain([&n]).map(|s| (*s).to_owned()).collect());
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for next in table.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, table, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    table.keys().find_map(|k| visit(k, table, &mut Vec::new(), &mut done))
}

/// The workspace's crates and their dependencies on each other, from `cargo metadata`.
fn workspace() -> (BTreeSet<String>, Vec<Edge>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let crates: BTreeSet<String> = packages.iter().map(|p| p["name"].as_str().expect("a name").to_owned()).collect();
    let mut edges = Vec::new();
    for p in packages {
        let from = p["name"].as_str().expect("a name");
        for d in p["dependencies"].as_array().expect("dependencies") {
            let to = d["name"].as_str().expect("a name");
            if crates.contains(to) {
                let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                edges.push((from.to_owned(), to.to_owned(), kind));
            }
        }
    }
    (crates, edges)
}

/// A module of the edge: a top-level file (`consumer.rs`) or folder (`routes/`) of its `src`.
type Layers = BTreeMap<String, usize>;

/// The layer of each edge module, from the section's numbered list (1 is the top): the
/// names in backticks of item N that end in `.rs` or `/`.
fn parse_layers(doc: &str) -> Result<Layers, String> {
    let section = doc.lines().skip_while(|l| l.trim_end() != SECTION).skip(1).take_while(|l| !l.starts_with("## "));
    let mut layers = Layers::new();
    let mut item: Option<usize> = None;
    for line in section {
        let number = line.split_once(". ").and_then(|(n, _)| n.parse::<usize>().ok());
        item = match number {
            Some(n) => Some(n),
            None if line.starts_with("   ") => item,
            None => None,
        };
        let Some(n) = item else { continue };
        for name in line.split('`').skip(1).step_by(2).filter(|t| t.ends_with(".rs") || t.ends_with('/')) {
            if let Some(other) = layers.insert(name.to_owned(), n)
                && other != n
            {
                return Err(format!("{name} is in layers {other} and {n}"));
            }
        }
    }
    if layers.is_empty() {
        return Err(format!("the '{SECTION}' section has no numbered list of the edge's layers"));
    }
    Ok(layers)
}

/// The modules a source names through `crate::` (comments left out).
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let before = line[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // edgejobs_crate::..., not ours
            }
            let name: String =
                line[at + "crate::".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Every import of a module above its own layer; `files` are (module, source) pairs and
/// `modules` every module of the crate (a name in `crate::` that is none, such as a function
/// of `lib.rs`, is left alone).
fn check_layers(layers: &Layers, modules: &BTreeSet<String>, files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for m in modules.iter().filter(|m| !layers.contains_key(*m)) {
        problems.push(format!("{m} is in no layer"));
    }
    for (module, source) in files {
        let Some(&own) = layers.get(module) else { continue };
        for name in crate_paths(source) {
            let target = [format!("{name}/"), format!("{name}.rs")].into_iter().find(|t| modules.contains(t));
            let Some(target) = target else { continue };
            if let Some(&theirs) = layers.get(&target)
                && theirs < own
            {
                problems.push(format!("{module} (layer {own}) imports crate::{name} (layer {theirs})"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// The edge's modules and its sources as (module, source).
fn edge_sources() -> (BTreeSet<String>, Vec<(String, String)>) {
    let src = root().join("functions/edge/src");
    let mut modules = BTreeSet::new();
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the edge's sources").map(|e| e.expect("an entry").path()) {
            let rel = entry.strip_prefix(&src).expect("under src");
            let top = rel.components().next().expect("a name").as_os_str().to_string_lossy().into_owned();
            let module = if rel.components().count() > 1 || entry.is_dir() { format!("{top}/") } else { top };
            if entry.is_dir() {
                modules.insert(module);
                stack.push(entry);
            } else if entry.extension().is_some_and(|e| e == "rs") {
                modules.insert(module.clone());
                files.push((module, std::fs::read_to_string(&entry).expect("a source")));
            }
        }
    }
    (modules, files)
}

#[test]
fn edge_modules_import_only_their_layer_or_below() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = parse_layers(&doc).unwrap_or_else(|e| panic!("{e}"));
    let (modules, files) = edge_sources();
    assert!(modules.contains("routes/") && files.len() > 10, "the edge's sources were read: {modules:?}");
    let problems = check_layers(&layers, &modules, &files);
    assert!(problems.is_empty(), "update the code or ARCHITECTURE.md's layers:\n{}", problems.join("\n"));
}

/// What each module of `shared/core` imports of the crate (`crate::` paths outside comments
/// and outside its `#[cfg(test)]` part, where a test may use any module), as a [`Table`].
fn core_imports() -> Table {
    let src = root().join("shared/core/src");
    let mut table = Table::new();
    for entry in std::fs::read_dir(&src).expect("core's sources").map(|e| e.expect("an entry").path()) {
        let Some(name) = entry.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
        if entry.extension().is_none_or(|e| e != "rs") || name == "lib" {
            continue;
        }
        let source = std::fs::read_to_string(&entry).expect("a source");
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let uses = crate_paths(code).into_iter().filter(|m| m != &name).collect();
        table.insert(name, uses);
    }
    table
}

#[test]
fn core_modules_import_each_other_without_a_loop() {
    let imports = core_imports();
    assert!(imports.contains_key("spec") && imports.contains_key("job"), "core's sources were read: {imports:?}");
    if let Some(cycle) = find_cycle(&imports) {
        panic!("shared/core has an import loop: {}", cycle.join(" → "));
    }
}

#[test]
fn crate_dependencies_follow_the_table_in_architecture_md() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let table = parse_table(&doc).unwrap_or_else(|e| panic!("{e}"));
    let (crates, edges) = workspace();
    assert!(crates.contains("edgejobs-core") && !edges.is_empty(), "the metadata names the workspace: {crates:?}");
    let problems = check(&table, &crates, &edges);
    assert!(problems.is_empty(), "update the code or ARCHITECTURE.md's '{SECTION}' table:\n{}", problems.join("\n"));
}

#[cfg(test)]
mod checker {
    use super::*;

    const DOC: &str = "# A\n\n## Dependencies\n\nText.\n\n| crate | may depend on |\n|---|---|\n\
        | `core` | — |\n| `shard` | `core` |\n| `edge` | `shard`, `core` |\n\n## Next\n\n| `x` | `y` |\n";

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn edge(from: &str, to: &str) -> Edge {
        (from.into(), to.into(), "normal".into())
    }

    #[test]
    fn the_table_is_read_from_its_section_only() {
        let t = parse_table(DOC).expect("parses");
        assert_eq!(t.keys().collect::<Vec<_>>(), ["core", "edge", "shard"]);
        assert_eq!(t["edge"], set(&["core", "shard"]));
        assert!(t["core"].is_empty());
        assert!(parse_table("# A\n\n## Other\n").is_err(), "no section");
        assert!(parse_table("## Dependencies\n\nno table\n").is_err(), "no table");
    }

    #[test]
    fn allowed_edges_pass() {
        let t = parse_table(DOC).expect("parses");
        let crates = set(&["core", "shard", "edge"]);
        assert_eq!(check(&t, &crates, &[edge("edge", "shard"), edge("shard", "core")]), Vec::<String>::new());
    }

    #[test]
    fn a_forbidden_edge_fails() {
        let t = parse_table(DOC).expect("parses");
        let crates = set(&["core", "shard", "edge"]);
        let p = check(&t, &crates, &[edge("shard", "core"), ("core".into(), "edge".into(), "dev".into())]);
        assert_eq!(p, ["core depends on edge (dev), which the table does not allow"]);
        let p = check(&t, &crates, &[edge("shard", "edge")]);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn a_crate_without_a_row_a_stale_row_and_a_loop_fail() {
        let t = parse_table(DOC).expect("parses");
        let p = check(&t, &set(&["core", "shard", "edge", "new"]), &[]);
        assert_eq!(p, ["new has no row in the table"]);
        let p = check(&t, &set(&["core", "edge"]), &[]);
        assert_eq!(p, ["the table names shard, which is not a workspace crate"]);
        let looped = DOC.replace("| `core` | — |", "| `core` | `edge` |");
        let p = check(&parse_table(&looped).expect("parses"), &set(&["core", "shard", "edge"]), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("the table has a loop: core → edge"), "{p:?}");
    }

    const LAYERS: &str = "## Dependencies\n\n1. `lib.rs`: top (`fetch`).\n2. `routes/`: the API,\n   and `tasks/`.\n\
        3. `shard/` and `http.rs`.\n\nThe end.\n";

    fn sources(files: &[(&str, &str)]) -> (BTreeSet<String>, Vec<(String, String)>) {
        let files: Vec<(String, String)> = files.iter().map(|(m, s)| ((*m).to_owned(), (*s).to_owned())).collect();
        (files.iter().map(|(m, _)| m.clone()).collect(), files)
    }

    #[test]
    fn layers_are_read_from_the_numbered_list() {
        let l = parse_layers(LAYERS).expect("parses");
        let got: Vec<(&str, usize)> = l.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("http.rs", 3), ("lib.rs", 1), ("routes/", 2), ("shard/", 3), ("tasks/", 2)]);
        assert!(parse_layers("## Dependencies\n\nNo list.\n").is_err());
    }

    #[test]
    fn an_import_from_a_higher_layer_fails() {
        let l = parse_layers(LAYERS).expect("parses");
        let ok = sources(&[
            ("lib.rs", "use crate::routes::handle;\nfn f() { crate::shard_count(); }"),
            ("routes/", "use crate::tasks;\nuse crate::http::{json};"),
            ("shard/", "use crate::http;\n/// See [`crate::routes::x`].\nuse edgejobs_crate::routes;"),
            ("http.rs", ""),
            ("tasks/", ""),
        ]);
        assert_eq!(check_layers(&l, &ok.0, &ok.1), Vec::<String>::new());
        let bad = sources(&[("shard/", "const M: u32 = crate::routes::schedules::MAX_LIST;"), ("routes/", "")]);
        assert_eq!(check_layers(&l, &bad.0, &bad.1), ["shard/ (layer 3) imports crate::routes (layer 2)"]);
        let unlisted = sources(&[("new.rs", "")]);
        assert_eq!(check_layers(&l, &unlisted.0, &unlisted.1), ["new.rs is in no layer"]);
    }
}

/// What `cargo tree` shows for `package` alone (its own feature resolution, as when it is
/// built for release on its own), normal and build dependencies, with features.
fn tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal,build,features",
            "--prefix",
            "none",
            "-p",
            package,
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Core is split by weight: the native consumer and the CLI never check a payload schema
/// or a cron zone, so they link neither the validator (core's `schema` feature, the one user
/// of `regex-lite`) nor jiff's bundled time-zone database; the Worker links both.
#[test]
fn the_consumer_and_the_cli_link_no_schema_validator_and_no_zone_database() {
    let heavy = |t: &str| -> Vec<String> {
        t.lines().filter(|l| l.starts_with("regex-lite ") || l.contains("tzdb-bundle")).map(str::to_owned).collect()
    };
    for light in ["edgejobs-consumer", "edgejobs-cli"] {
        let found = heavy(&tree(light));
        assert!(found.is_empty(), "{light} links {found:?}");
    }
    let edge = heavy(&tree("edgejobs-edge"));
    assert!(edge.iter().any(|l| l.starts_with("regex-lite ")), "the check looks for the right names: {edge:?}");
    assert!(edge.iter().any(|l| l.contains("tzdb-bundle")), "the check looks for the right names: {edge:?}");
}
