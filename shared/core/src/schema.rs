//! Our JSON Schema validator for payload schemas: a stated subset of draft 2020-12, compiled
//! once when a job type is declared and run on every enqueue of that type.
//!
//! Why our own: a general validator (boon, jsonschema) links a Unicode-aware regex engine
//! and meta-schemas, most of the Worker's size (#25). Payload schemas need far less, so this
//! one supports a subset and refuses everything else when the schema is compiled, naming the
//! keyword and where it is: a declared type never checks less than its author thinks.
//!
//! Supported: boolean schemas; `type`, `enum`, `const`; the numeric, string, array and
//! object assertions; `properties`, `patternProperties`, `additionalProperties`,
//! `propertyNames`, `dependentRequired`, `dependentSchemas`; `prefixItems`, `items`,
//! `contains` (with `minContains`, `maxContains`); `allOf`, `anyOf`, `oneOf`, `not`,
//! `if`/`then`/`else`; `$defs` and `$ref` within the document (`#`, any JSON pointer,
//! `#anchor` through `$anchor`); a `$id` and `$schema` (2020-12's) at the root; and the
//! annotations (`format` among them, an annotation by default in 2020-12). Not supported:
//! another document, `$dynamicRef`/`$dynamicAnchor`, `unevaluated*`, a nested `$id`, and any
//! other keyword. `pattern` runs on `regex-lite` (linear time, no Unicode classes): a pattern
//! it cannot compile (backreferences, lookaround, `\p{..}`) is refused with its reason.
//!
//! Bounds: the schema is at most 64 KiB (the caller), nests at most [`MAX_DEPTH`] levels,
//! and a check stops after [`MAX_EVAL_DEPTH`] nested evaluations or [`MAX_STEPS`] steps
//! (a `$ref` cycle, or `anyOf`s that recurse both ways), answering a violation.

use std::collections::{BTreeMap, HashMap};

use regex_lite::Regex;
use serde_json::{Map, Value};

/// Deepest nesting of subschemas.
pub const MAX_DEPTH: usize = 64;
/// Deepest nesting of evaluations of one payload (schema nesting through `$ref`s, times the
/// payload's depth, which serde_json caps at 128).
pub const MAX_EVAL_DEPTH: usize = 512;
/// Most subschema evaluations (and value comparisons of `uniqueItems`) of one payload.
pub const MAX_STEPS: u64 = 2_000_000;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Keywords taken as annotations: accepted with any value, never asserted.
const ANNOTATIONS: &[&str] = &[
    "format",
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// A compiled schema: its subschemas in an arena, the root first.
#[derive(Debug)]
pub struct Validator {
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Bool(bool),
    Keywords(Box<Keywords>),
}

const T_NULL: u8 = 1;
const T_BOOLEAN: u8 = 2;
const T_OBJECT: u8 = 4;
const T_ARRAY: u8 = 8;
const T_NUMBER: u8 = 16;
const T_STRING: u8 = 32;
const T_INTEGER: u8 = 64;
const TYPE_NAMES: [(&str, u8); 7] = [
    ("null", T_NULL),
    ("boolean", T_BOOLEAN),
    ("object", T_OBJECT),
    ("array", T_ARRAY),
    ("number", T_NUMBER),
    ("string", T_STRING),
    ("integer", T_INTEGER),
];

#[derive(Debug, Default)]
struct Keywords {
    types: Option<u8>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    multiple_of: Option<f64>,
    maximum: Option<f64>,
    exclusive_maximum: Option<f64>,
    minimum: Option<f64>,
    exclusive_minimum: Option<f64>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    unique_items: bool,
    prefix_items: Vec<usize>,
    items: Option<usize>,
    contains: Option<usize>,
    min_contains: Option<u64>,
    max_contains: Option<u64>,
    max_properties: Option<u64>,
    min_properties: Option<u64>,
    required: Vec<String>,
    properties: BTreeMap<String, usize>,
    pattern_properties: Vec<(Regex, usize)>,
    additional_properties: Option<usize>,
    property_names: Option<usize>,
    dependent_required: Vec<(String, Vec<String>)>,
    dependent_schemas: Vec<(String, usize)>,
    all_of: Vec<usize>,
    any_of: Vec<usize>,
    one_of: Vec<usize>,
    not: Option<usize>,
    if_: Option<usize>,
    then: Option<usize>,
    else_: Option<usize>,
    reference: Option<usize>,
}

/// Where a keyword is, for compile errors: "at its root" or "at /a/b".
fn at(ptr: &str) -> String {
    if ptr.is_empty() { "at its root".to_owned() } else { format!("at {ptr}") }
}

fn invalid(ptr: &str, why: impl std::fmt::Display) -> String {
    format!("is not a valid JSON Schema {}: {why}", at(ptr))
}

fn unsupported(ptr: &str, why: impl std::fmt::Display) -> String {
    format!("is not supported {}: {why}", at(ptr))
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Decodes the `%XX` escapes of a URI fragment.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

struct Compiler<'a> {
    root: &'a Value,
    root_id: Option<String>,
    nodes: Vec<Node>,
    /// Compiled locations (JSON pointers into the schema) → node.
    at: HashMap<String, usize>,
    anchors: HashMap<String, String>,
    /// `$ref`s to resolve once everything is compiled: (node, reference, its location).
    refs: Vec<(usize, String, String)>,
}

impl Validator {
    /// Compiles `root`, or says what in it is invalid or unsupported, and where.
    pub fn compile(root: &Value) -> Result<Validator, String> {
        let root_id = match root.get("$id") {
            None => None,
            Some(Value::String(id)) => Some(id.split('#').next().unwrap_or_default().to_owned()),
            Some(_) => return Err(invalid("/$id", "want a string")),
        };
        let mut c = Compiler {
            root,
            root_id,
            nodes: Vec::new(),
            at: HashMap::new(),
            anchors: HashMap::new(),
            refs: Vec::new(),
        };
        c.compile(root, String::new(), 0)?;
        while let Some((node, reference, ptr)) = c.refs.pop() {
            let target = c.resolve(&reference, &ptr)?;
            if let Node::Keywords(k) = &mut c.nodes[node] {
                k.reference = Some(target);
            }
        }
        Ok(Validator { nodes: c.nodes })
    }

    /// The first violation of `payload`: the JSON pointer to the value and what is wrong.
    pub fn first_violation(&self, payload: &Value) -> Option<(String, String)> {
        let mut run = Run { steps: 0, exhausted: None };
        let result = self.check(0, payload, &Loc::Root, &mut run, 0);
        if let Some(v) = run.exhausted {
            return Some(v);
        }
        result.err()
    }
}

impl Compiler<'_> {
    fn compile(&mut self, v: &Value, ptr: String, depth: usize) -> Result<usize, String> {
        if let Some(&n) = self.at.get(&ptr) {
            return Ok(n);
        }
        if depth > MAX_DEPTH {
            return Err(unsupported(&ptr, format_args!("subschemas nest deeper than {MAX_DEPTH} levels")));
        }
        let index = self.nodes.len();
        self.nodes.push(Node::Bool(true));
        self.at.insert(ptr.clone(), index);
        let node = match v {
            Value::Bool(b) => Node::Bool(*b),
            Value::Object(o) => Node::Keywords(Box::new(self.keywords(o, index, &ptr, depth)?)),
            _ => return Err(invalid(&ptr, "a schema is an object or a boolean")),
        };
        self.nodes[index] = node;
        Ok(index)
    }

    fn sub(&mut self, v: &Value, ptr: &str, key: &str, depth: usize) -> Result<usize, String> {
        self.compile(v, format!("{ptr}/{}", escape(key)), depth + 1)
    }

    fn subs(&mut self, v: &Value, ptr: &str, kw: &str, depth: usize) -> Result<Vec<usize>, String> {
        let here = format!("{ptr}/{kw}");
        match v {
            Value::Array(a) if !a.is_empty() => {
                a.iter().enumerate().map(|(i, s)| self.compile(s, format!("{here}/{i}"), depth + 1)).collect()
            }
            _ => Err(invalid(&here, "want a non-empty array of schemas")),
        }
    }

    fn schema_map(&mut self, v: &Value, ptr: &str, kw: &str, depth: usize) -> Result<Vec<(String, usize)>, String> {
        let here = format!("{ptr}/{kw}");
        let Value::Object(o) = v else { return Err(invalid(&here, "want an object of schemas")) };
        o.iter().map(|(k, s)| Ok((k.clone(), self.sub(s, &here, k, depth)?))).collect()
    }

    fn keywords(&mut self, o: &Map<String, Value>, index: usize, ptr: &str, depth: usize) -> Result<Keywords, String> {
        let mut k = Keywords::default();
        for (kw, v) in o {
            let here = format!("{ptr}/{}", escape(kw));
            let number = || v.as_f64().ok_or_else(|| invalid(&here, "want a number"));
            let count = || match v {
                Value::Number(n) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
                    .ok_or_else(|| invalid(&here, "want a non-negative integer")),
                _ => Err(invalid(&here, "want a non-negative integer")),
            };
            match kw.as_str() {
                "$schema" => {
                    if v.as_str().map(|s| s.trim_end_matches('#')) != Some(DRAFT_2020_12) {
                        return Err(unsupported(&here, format_args!("only draft 2020-12 ({DRAFT_2020_12}) is")));
                    }
                }
                "$id" if ptr.is_empty() => {}
                "$id" => return Err(unsupported(&here, "`$id` is allowed only at the root")),
                "$anchor" => {
                    let name = v.as_str().ok_or_else(|| invalid(&here, "want a string"))?;
                    let mut chars = name.chars();
                    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !ok {
                        return Err(invalid(&here, format_args!("{name:?} is not an anchor name")));
                    }
                    if self.anchors.insert(name.to_owned(), ptr.to_owned()).is_some() {
                        return Err(invalid(&here, format_args!("anchor {name:?} is defined twice")));
                    }
                }
                "$defs" => {
                    self.schema_map(v, ptr, kw, depth)?;
                }
                "$ref" => {
                    let r = v.as_str().ok_or_else(|| invalid(&here, "want a string"))?;
                    self.refs.push((index, r.to_owned(), here.clone()));
                }
                "type" => {
                    let one = |t: &Value| {
                        let name = t.as_str().unwrap_or_default();
                        TYPE_NAMES.iter().find(|(n, _)| *n == name).map(|(_, bit)| *bit).ok_or_else(|| {
                            invalid(
                                &here,
                                format_args!(
                                    "{t} is not a type (want null, boolean, object, array, number, string or integer)"
                                ),
                            )
                        })
                    };
                    k.types = Some(match v {
                        Value::Array(a) => a.iter().try_fold(0, |acc, t| one(t).map(|bit| acc | bit))?,
                        t => one(t)?,
                    });
                }
                "enum" => k.enumeration = Some(v.as_array().cloned().ok_or_else(|| invalid(&here, "want an array"))?),
                "const" => k.constant = Some(v.clone()),
                "multipleOf" => {
                    let m = number()?;
                    if m <= 0.0 {
                        return Err(invalid(&here, "want a number greater than 0"));
                    }
                    k.multiple_of = Some(m);
                }
                "maximum" => k.maximum = Some(number()?),
                "exclusiveMaximum" => k.exclusive_maximum = Some(number()?),
                "minimum" => k.minimum = Some(number()?),
                "exclusiveMinimum" => k.exclusive_minimum = Some(number()?),
                "maxLength" => k.max_length = Some(count()?),
                "minLength" => k.min_length = Some(count()?),
                "maxItems" => k.max_items = Some(count()?),
                "minItems" => k.min_items = Some(count()?),
                "maxContains" => k.max_contains = Some(count()?),
                "minContains" => k.min_contains = Some(count()?),
                "maxProperties" => k.max_properties = Some(count()?),
                "minProperties" => k.min_properties = Some(count()?),
                "uniqueItems" => k.unique_items = v.as_bool().ok_or_else(|| invalid(&here, "want a boolean"))?,
                "pattern" => {
                    let p = v.as_str().ok_or_else(|| invalid(&here, "want a string"))?;
                    k.pattern = Some((p.to_owned(), regex(p, &here)?));
                }
                "required" => k.required = strings(v, &here)?,
                "dependentRequired" => {
                    let Value::Object(deps) = v else { return Err(invalid(&here, "want an object of arrays")) };
                    for (name, list) in deps {
                        k.dependent_required.push((name.clone(), strings(list, &format!("{here}/{}", escape(name)))?));
                    }
                }
                "properties" => k.properties = self.schema_map(v, ptr, kw, depth)?.into_iter().collect(),
                "patternProperties" => {
                    for (p, s) in self.schema_map(v, ptr, kw, depth)? {
                        k.pattern_properties.push((regex(&p, &format!("{here}/{}", escape(&p)))?, s));
                    }
                }
                "dependentSchemas" => k.dependent_schemas = self.schema_map(v, ptr, kw, depth)?,
                "additionalProperties" => k.additional_properties = Some(self.sub(v, ptr, kw, depth)?),
                "propertyNames" => k.property_names = Some(self.sub(v, ptr, kw, depth)?),
                "items" => k.items = Some(self.sub(v, ptr, kw, depth)?),
                "prefixItems" => k.prefix_items = self.subs(v, ptr, kw, depth)?,
                "contains" => k.contains = Some(self.sub(v, ptr, kw, depth)?),
                "allOf" => k.all_of = self.subs(v, ptr, kw, depth)?,
                "anyOf" => k.any_of = self.subs(v, ptr, kw, depth)?,
                "oneOf" => k.one_of = self.subs(v, ptr, kw, depth)?,
                "not" => k.not = Some(self.sub(v, ptr, kw, depth)?),
                "if" => k.if_ = Some(self.sub(v, ptr, kw, depth)?),
                "then" => k.then = Some(self.sub(v, ptr, kw, depth)?),
                "else" => k.else_ = Some(self.sub(v, ptr, kw, depth)?),
                a if ANNOTATIONS.contains(&a) => {}
                "$dynamicRef"
                | "$dynamicAnchor"
                | "$recursiveRef"
                | "$recursiveAnchor"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "$vocabulary" => {
                    return Err(unsupported(&here, format_args!("payload schemas do not support `{kw}`")));
                }
                other => {
                    return Err(unsupported(&here, format_args!("`{other}` is not a keyword payload schemas support")));
                }
            }
        }
        Ok(k)
    }

    /// The node a `$ref` found at `ptr` points to, compiling the location if no subschema
    /// was there yet (a pointer may name any value of the document).
    fn resolve(&mut self, reference: &str, ptr: &str) -> Result<usize, String> {
        let other = || {
            unsupported(
                ptr,
                format_args!(
                    "`$ref` {reference:?} refers to another document, which is not fetched: only references within the schema are allowed"
                ),
            )
        };
        let fragment = match reference.split_once('#') {
            Some(("", f)) => f,
            Some((doc, f)) if self.root_id.as_deref() == Some(doc) => f,
            None if self.root_id.as_deref() == Some(reference) => "",
            _ => return Err(other()),
        };
        let fragment =
            percent_decode(fragment).ok_or_else(|| invalid(ptr, format_args!("{reference:?} is not a valid URI")))?;
        let target = if fragment.is_empty() || fragment.starts_with('/') {
            fragment
        } else {
            self.anchors
                .get(&fragment)
                .cloned()
                .ok_or_else(|| invalid(ptr, format_args!("`$ref` {reference:?}: no `$anchor` is named {fragment:?}")))?
        };
        if let Some(&n) = self.at.get(&target) {
            return Ok(n);
        }
        let root = self.root;
        let value = root
            .pointer(&target)
            .ok_or_else(|| invalid(ptr, format_args!("`$ref` {reference:?} points to nothing")))?;
        // Its depth is not known; a location only a `$ref` reaches starts a new count.
        self.compile(value, target, 0)
    }
}

fn strings(v: &Value, here: &str) -> Result<Vec<String>, String> {
    let list = v.as_array().ok_or_else(|| invalid(here, "want an array of strings"))?;
    list.iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| invalid(here, "want an array of strings")))
        .collect()
}

fn regex(pattern: &str, here: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        let reason = e.to_string();
        let reason = reason.lines().last().unwrap_or_default().trim().to_owned();
        unsupported(
            here,
            format_args!(
                "pattern {pattern:?} cannot run on regex-lite (linear time, no backreferences, lookaround or Unicode classes): {reason}"
            ),
        )
    })
}

/// A location in the payload, built up as the check descends; turned into a JSON pointer
/// only for a violation.
enum Loc<'a> {
    Root,
    Key(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

impl Loc<'_> {
    fn pointer(&self) -> String {
        match self {
            Loc::Root => String::new(),
            Loc::Key(parent, k) => format!("{}/{}", parent.pointer(), escape(k)),
            Loc::Index(parent, i) => format!("{}/{i}", parent.pointer()),
        }
    }
}

struct Run {
    steps: u64,
    /// Set once a bound is hit: the check is abandoned, and this is its answer.
    exhausted: Option<(String, String)>,
}

type Checked = Result<(), (String, String)>;

fn fail(loc: &Loc<'_>, message: String) -> Checked {
    Err((loc.pointer(), message))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn type_matches(types: u8, v: &Value) -> bool {
    let bit = match v {
        Value::Null => T_NULL,
        Value::Bool(_) => T_BOOLEAN,
        Value::Number(n) if is_integer(n) => T_NUMBER | T_INTEGER,
        Value::Number(_) => T_NUMBER,
        Value::String(_) => T_STRING,
        Value::Array(_) => T_ARRAY,
        Value::Object(_) => T_OBJECT,
    };
    types & bit != 0
}

fn type_names(types: u8) -> String {
    let names: Vec<&str> = TYPE_NAMES.iter().filter(|(_, bit)| types & bit != 0).map(|(n, _)| *n).collect();
    names.join(" or ")
}

/// JSON equality: numbers by value (1 == 1.0), objects regardless of key order.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| equal(a, b)))
        }
        _ => a == b,
    }
}

/// A value for a message, cut short if long.
fn show(v: &Value) -> String {
    cut(v.to_string())
}

fn cut(s: String) -> String {
    if s.chars().count() > 80 { format!("{}...", s.chars().take(77).collect::<String>()) } else { s }
}

fn is_multiple(x: &serde_json::Number, m: f64) -> bool {
    if let (Some(x), true) = (x.as_i64(), m.fract() == 0.0 && m < 9.0e15) {
        return x % (m as i64) == 0;
    }
    let q = x.as_f64().unwrap_or(f64::NAN) / m;
    q.is_finite() && (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

impl Validator {
    /// Whether `v` matches node `n`, for the applicators that only need a yes or no.
    fn matches(&self, n: usize, v: &Value, loc: &Loc<'_>, run: &mut Run, depth: usize) -> bool {
        self.check(n, v, loc, run, depth).is_ok()
    }

    fn check(&self, n: usize, v: &Value, loc: &Loc<'_>, run: &mut Run, depth: usize) -> Checked {
        if run.exhausted.is_some() {
            return Err((String::new(), String::new()));
        }
        run.steps += 1;
        if depth > MAX_EVAL_DEPTH || run.steps > MAX_STEPS {
            return exhaust(run, loc, depth > MAX_EVAL_DEPTH);
        }
        let k = match &self.nodes[n] {
            Node::Bool(true) => return Ok(()),
            Node::Bool(false) => return fail(loc, "is not allowed here (the schema is `false`)".to_owned()),
            Node::Keywords(k) => k,
        };
        let d = depth + 1;
        if let Some(r) = k.reference {
            self.check(r, v, loc, run, d)?;
        }
        Self::check_value(k, v, loc)?;
        match v {
            Value::Array(a) => self.check_array(k, a, loc, run, d)?,
            Value::Object(o) => self.check_object(k, o, v, loc, run, d)?,
            _ => {}
        }
        for &s in &k.all_of {
            self.check(s, v, loc, run, d)?;
        }
        if !k.any_of.is_empty() {
            let mut first = None;
            for &s in &k.any_of {
                match self.check(s, v, loc, run, d) {
                    Ok(()) => {
                        first = None;
                        break;
                    }
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
        if !k.one_of.is_empty() {
            let mut matched = None;
            let mut first = None;
            for (i, &s) in k.one_of.iter().enumerate() {
                match self.check(s, v, loc, run, d) {
                    Ok(()) => match matched {
                        Some(j) => return one_of_twice(loc, j, i),
                        None => matched = Some(i),
                    },
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            if matched.is_none()
                && let Some(e) = first
            {
                return Err(e);
            }
        }
        if let Some(s) = k.not
            && self.matches(s, v, loc, run, d)
        {
            return fail(loc, "must not match the `not` schema".to_owned());
        }
        if let Some(cond) = k.if_ {
            let branch = if self.matches(cond, v, loc, run, d) { k.then } else { k.else_ };
            if let Some(b) = branch {
                self.check(b, v, loc, run, d)?;
            }
        }
        Ok(())
    }

    /// The assertions on `v` itself (no subschema): apart from `check` to keep its stack
    /// frame, which recursion multiplies, small.
    #[inline(never)]
    fn check_value(k: &Keywords, v: &Value, loc: &Loc<'_>) -> Checked {
        if let Some(types) = k.types
            && !type_matches(types, v)
        {
            return fail(loc, format!("want {}, but got {}", type_names(types), type_name(v)));
        }
        if let Some(c) = &k.constant
            && !equal(c, v)
        {
            return fail(loc, format!("want {}, but got {}", show(c), show(v)));
        }
        if let Some(e) = &k.enumeration
            && !e.iter().any(|x| equal(x, v))
        {
            let all: Vec<String> = e.iter().map(show).collect();
            return fail(loc, format!("want one of {}, but got {}", cut(all.join(", ")), show(v)));
        }
        match v {
            Value::Number(num) => Self::check_number(k, num, loc),
            Value::String(s) => {
                let len = s.chars().count() as u64;
                if let Some(max) = k.max_length
                    && len > max
                {
                    return fail(loc, format!("must be at most {max} characters long, but is {len}"));
                }
                if let Some(min) = k.min_length
                    && len < min
                {
                    return fail(loc, format!("must be at least {min} characters long, but is {len}"));
                }
                if let Some((p, re)) = &k.pattern
                    && !re.is_match(s)
                {
                    return fail(loc, format!("does not match the pattern {p:?}"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_number(k: &Keywords, num: &serde_json::Number, loc: &Loc<'_>) -> Checked {
        let x = num.as_f64().unwrap_or(f64::NAN);
        if let Some(m) = k.maximum
            && x > m
        {
            return fail(loc, format!("must be <= {m}, but got {num}"));
        }
        if let Some(m) = k.exclusive_maximum
            && x >= m
        {
            return fail(loc, format!("must be < {m}, but got {num}"));
        }
        if let Some(m) = k.minimum
            && x < m
        {
            return fail(loc, format!("must be >= {m}, but got {num}"));
        }
        if let Some(m) = k.exclusive_minimum
            && x <= m
        {
            return fail(loc, format!("must be > {m}, but got {num}"));
        }
        if let Some(m) = k.multiple_of
            && !is_multiple(num, m)
        {
            return fail(loc, format!("must be a multiple of {m}, but got {num}"));
        }
        Ok(())
    }

    #[inline(never)]
    fn check_array(&self, k: &Keywords, a: &[Value], loc: &Loc<'_>, run: &mut Run, d: usize) -> Checked {
        let len = a.len() as u64;
        if let Some(max) = k.max_items
            && len > max
        {
            return fail(loc, format!("must have at most {max} items, but has {len}"));
        }
        if let Some(min) = k.min_items
            && len < min
        {
            return fail(loc, format!("must have at least {min} items, but has {len}"));
        }
        if k.unique_items {
            for i in 0..a.len() {
                for j in i + 1..a.len() {
                    run.steps += 1;
                    if equal(&a[i], &a[j]) {
                        return fail(loc, format!("items {i} and {j} are equal, but must be unique"));
                    }
                }
                if run.steps > MAX_STEPS {
                    return exhaust(run, loc, false);
                }
            }
        }
        for (i, item) in a.iter().enumerate() {
            let s = match k.prefix_items.get(i) {
                Some(&s) => s,
                None => match k.items {
                    Some(s) => s,
                    None => break,
                },
            };
            self.check(s, item, &Loc::Index(loc, i), run, d)?;
        }
        if let Some(c) = k.contains {
            let mut found = 0u64;
            for (i, item) in a.iter().enumerate() {
                if self.matches(c, item, &Loc::Index(loc, i), run, d) {
                    found += 1;
                }
            }
            let min = k.min_contains.unwrap_or(1);
            if found < min {
                return fail(loc, format!("want at least {min} items matching `contains`, but {found} do"));
            }
            if let Some(max) = k.max_contains
                && found > max
            {
                return fail(loc, format!("want at most {max} items matching `contains`, but {found} do"));
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn check_object(
        &self,
        k: &Keywords,
        o: &Map<String, Value>,
        v: &Value,
        loc: &Loc<'_>,
        run: &mut Run,
        d: usize,
    ) -> Checked {
        let len = o.len() as u64;
        if let Some(max) = k.max_properties
            && len > max
        {
            return fail(loc, format!("must have at most {max} properties, but has {len}"));
        }
        if let Some(min) = k.min_properties
            && len < min
        {
            return fail(loc, format!("must have at least {min} properties, but has {len}"));
        }
        let missing: Vec<&str> = k.required.iter().filter(|r| !o.contains_key(*r)).map(String::as_str).collect();
        if !missing.is_empty() {
            return fail(loc, format!("missing properties: {}", quoted(&missing)));
        }
        for (name, needs) in &k.dependent_required {
            if o.contains_key(name) {
                let missing: Vec<&str> = needs.iter().filter(|r| !o.contains_key(*r)).map(String::as_str).collect();
                if !missing.is_empty() {
                    return fail(loc, format!("missing properties: {} (required with {name:?})", quoted(&missing)));
                }
            }
        }
        for (name, value) in o {
            let here = Loc::Key(loc, name);
            if let Some(s) = k.property_names {
                let key = Value::String(name.clone());
                if let Err((_, why)) = self.check(s, &key, &here, run, d) {
                    return fail(&here, format!("property name {name:?}: {why}"));
                }
            }
            let mut known = false;
            if let Some(s) = k.properties.get(name) {
                known = true;
                self.check(*s, value, &here, run, d)?;
            }
            for (re, s) in &k.pattern_properties {
                if re.is_match(name) {
                    known = true;
                    self.check(*s, value, &here, run, d)?;
                }
            }
            if !known && let Some(s) = k.additional_properties {
                if matches!(self.nodes[s], Node::Bool(false)) {
                    return fail(&here, "is not an allowed property".to_owned());
                }
                self.check(s, value, &here, run, d)?;
            }
        }
        for (name, s) in &k.dependent_schemas {
            if o.contains_key(name) {
                self.check(*s, v, loc, run, d)?;
            }
        }
        Ok(())
    }
}

/// Abandons the check at a bound: `run` keeps the answer, every caller unwinds.
#[cold]
#[inline(never)]
fn exhaust(run: &mut Run, loc: &Loc<'_>, too_deep: bool) -> Checked {
    let why = if too_deep {
        format!(
            "cannot be checked: the schema nests more than {MAX_EVAL_DEPTH} levels deep here (a `$ref` that refers back to itself?)"
        )
    } else {
        format!("cannot be checked: the schema takes more than {MAX_STEPS} steps on this payload")
    };
    run.exhausted = Some((loc.pointer(), why));
    Err((String::new(), String::new()))
}

#[inline(never)]
fn one_of_twice(loc: &Loc<'_>, i: usize, j: usize) -> Checked {
    fail(loc, format!("matches subschemas {i} and {j} of `oneOf`, want exactly one"))
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(schema: Value) -> String {
        Validator::compile(&schema).err().unwrap_or_else(|| panic!("{schema} was accepted"))
    }

    #[test]
    fn what_is_not_supported_is_refused_with_its_location() {
        let e = refused(json!({ "properties": { "a": { "unevaluatedProperties": false } } }));
        assert!(e.contains("/properties/a/unevaluatedProperties") && e.contains("unevaluatedProperties"), "{e}");
        let e = refused(json!({ "items": { "typo": 1 } }));
        assert!(e.contains("at /items/typo") && e.contains("`typo`"), "{e}");
        let e = refused(json!({ "$dynamicRef": "#x" }));
        assert!(e.contains("at /$dynamicRef"), "{e}");
        let e = refused(json!({ "$defs": { "a": { "$id": "a.json" } } }));
        assert!(e.contains("at /$defs/a/$id") && e.contains("only at the root"), "{e}");
        let e = refused(json!({ "allOf": [{ "$ref": "https://example.com/s.json" }] }));
        assert!(e.contains("at /allOf/0/$ref") && e.contains("another document"), "{e}");
        let e = refused(json!({ "$schema": "http://json-schema.org/draft-07/schema#" }));
        assert!(e.contains("at /$schema") && e.contains("2020-12"), "{e}");
        let e = refused(json!({ "$ref": "#/$defs/missing" }));
        assert!(e.contains("points to nothing"), "{e}");
        for p in [r"^(a)\1$", r"(?=a)", r"(?<!a)b", r"\p{L}"] {
            let e = refused(json!({ "properties": { "s": { "pattern": p } } }));
            assert!(e.contains("at /properties/s/pattern") && e.contains("regex-lite"), "{p}: {e}");
            let e = refused(json!({ "patternProperties": { p: true } }));
            assert!(
                e.contains(&format!("at /patternProperties/{}", escape(p))) && e.contains("regex-lite"),
                "{p}: {e}"
            );
        }
        let mut deep = json!(true);
        for _ in 0..MAX_DEPTH + 1 {
            deep = json!({ "items": deep });
        }
        assert!(refused(deep).contains("deeper than"));
    }

    fn deep_array(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn a_schema_that_refers_to_itself_ends_on_any_payload() {
        let payloads = [json!(1), deep_array(100), json!({ "a": { "a": { "a": {} } } })];
        let loops = [
            json!({ "$ref": "#" }),
            json!({ "$defs": { "a": { "$ref": "#/$defs/b" }, "b": { "$ref": "#/$defs/a" } }, "$ref": "#/$defs/a" }),
            json!({ "$defs": { "a": { "anyOf": [{ "$ref": "#/$defs/a" }, { "$ref": "#/$defs/a" }] } }, "$ref": "#/$defs/a" }),
            json!({ "$defs": { "a": { "not": { "$ref": "#/$defs/a" } } }, "$ref": "#/$defs/a" }),
        ];
        for schema in &loops {
            let s = Validator::compile(schema).unwrap_or_else(|e| panic!("{e}"));
            for p in &payloads {
                let (_, why) = s.first_violation(p).unwrap_or_else(|| panic!("{schema} accepted {p}"));
                assert!(why.contains("cannot be checked"), "{why}");
            }
        }
        // Recursion that descends the payload is fine, however deep the payload (serde_json
        // parses at most 128 levels), and anyOfs that recurse both ways stop at the step bound.
        let tree = Validator::compile(&json!({ "anyOf": [{ "type": "integer" }, { "items": { "$ref": "#" } }] }))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.first_violation(&deep_array(127)), None);
        let both = json!({ "anyOf": [{ "items": { "$ref": "#" } }, { "items": { "$ref": "#" } }], "type": "array" });
        let both = Validator::compile(&both).unwrap_or_else(|e| panic!("{e}"));
        assert!(both.first_violation(&deep_array(60)).is_some_and(|(_, why)| why.contains("steps")));
        // So does a long array that must have unique items.
        let unique = Validator::compile(&json!({ "uniqueItems": true })).unwrap_or_else(|e| panic!("{e}"));
        let long = Value::Array((0..3000).map(|i| json!(i)).collect());
        assert!(unique.first_violation(&long).is_some_and(|(_, why)| why.contains("steps")));
        assert_eq!(unique.first_violation(&Value::Array((0..1000).map(|i| json!(i)).collect())), None);
    }

    #[test]
    fn messages_name_the_value_and_the_rule() {
        let s = Validator::compile(&json!({
            "type": "object", "required": ["id", "tags"], "additionalProperties": false,
            "properties": { "id": { "type": "integer", "maximum": 10 }, "tags": { "items": { "enum": ["a", "b"] } } }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let v = |p: Value| s.first_violation(&p);
        assert_eq!(v(json!({ "id": 1, "tags": [] })), None);
        assert_eq!(v(json!({ "id": 1.0, "tags": [] })), None);
        assert_eq!(v(json!({ "id": "7", "tags": [] })), Some(("/id".into(), "want integer, but got string".into())));
        assert_eq!(v(json!({ "id": 11, "tags": [] })), Some(("/id".into(), "must be <= 10, but got 11".into())));
        assert_eq!(v(json!({})), Some((String::new(), r#"missing properties: "id", "tags""#.into())));
        assert_eq!(v(json!({ "id": 1, "tags": [], "x": 1 })), Some(("/x".into(), "is not an allowed property".into())));
        assert_eq!(
            v(json!({ "id": 1, "tags": ["a", "c"] })),
            Some(("/tags/1".into(), r#"want one of "a", "b", but got "c""#.into()))
        );
    }
}
